//! One task per client connection: socket bytes into the sans-IO `Connection`, its events
//! answered by the engine, its output written back in one batched write.
//!
//! Memory per idle connection: no read buffer (the task waits for readability and reads into
//! its thread's shared buffer, see `read`), no timer of its own (an entry in the thread's
//! connection timers), and, once parked (see `park`), no task at all: a compact boxed record
//! (384 B: the session, keep alive, limits, will, socket, identity) in the connection's
//! handle, the handle (mailbox, timer slot) and entries in the thread tables and its epoll
//! set. Measured (10 000 idle 3.1.1 clients, RSS delta): about 0.9 KB per connection on
//! either backend, 1.42-1.46 KB with one subscription each (benches/RESULTS.md, session 6).

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use compio::BufResult;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use halyard_codec::{ProtocolVersion, QoS, ReasonCode, RetainHandling};
use halyard_session::{
    ClientId, ConnectRequest, Connection, DeliverOutcome, Delivery, Event, Message,
    SubscribeRequest, Will,
};

use halyard_transport::{Layer, Transport};

use crate::cluster::retained::RetainWait;
use crate::cluster::{AckWait, Forward};
use crate::durable::QueueLedger;
use crate::engine::publish::{self, Outbox};
use crate::engine::thread::{ConnHandle, ConnMsg, ThreadCtx, count_drop};
use crate::engine::{Claim, ConnRef, Moving, Route, SessionKey, SubValue, ThreadMsg};
use crate::metrics::{DropReason, Limit};
use crate::security::{Denial, SourceSlot};

pub(crate) mod park;
mod read;
mod store;
mod write;

/// Socket helpers for the tests of the connection modules.
#[cfg(test)]
mod test_sockets {
    use std::net::{TcpListener, TcpStream};

    /// A connected pair of loopback sockets: (client, accepted).
    pub(super) fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        (client, accepted)
    }
}

use park::{Pace, wait};
use read::{ReadNow, Reader};

use store::StepPublish;

/// Largest write buffer capacity kept between writes; larger ones are freed after use.
const KEEP_WRITE_CAPACITY: usize = 64 * 1024;

/// Serves one accepted socket until it closes. `slot` is the socket's per-source slot in the
/// connect guard (released when the task ends); its address is the one bans apply to.
/// `transport` is the TLS/WebSocket layer stack of a `[listeners.tls|ws|wss]` socket (none
/// for plain TCP).
///
/// The setup runs at once, not in the returned future: an `async fn` would keep its
/// arguments and setup locals in the future, which every idle connection carries.
pub fn serve(
    ctx: Rc<ThreadCtx>,
    stream: TcpStream,
    slot: Option<SourceSlot>,
    transport: Option<Transport>,
) -> impl Future<Output = ()> {
    let me = ConnRef {
        thread: ctx.index,
        conn: ctx.broker.next_conn_id(),
    };
    let handle = ConnHandle::new(me);
    ctx.add_conn(handle.clone());
    let stats = ctx.stats();
    stats.connections.fetch_add(1, Relaxed);
    stats.connections_accepted.fetch_add(1, Relaxed);
    let now = Instant::now();
    let mut conn = Connection::new(ctx.broker.session_config.clone(), now);
    let uring = compio::runtime::Runtime::with_current(|r| r.driver_type().is_iouring());
    let mut registered = park::Registration::No;
    let reader = match Reader::new(&stream, uring, now) {
        Ok(mut r) => {
            registered = park::watch(&ctx, stream.as_raw_fd(), me.conn, &mut r, uring, registered);
            Some(r)
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot poll the socket");
            conn.socket_closed(now);
            None
        }
    };
    // Boxed: it is freed while the connection is parked (only the small `Parked` stays, in
    // this future).
    let task = Box::new(ConnTask {
        conn,
        outbox: Outbox::new(ctx.broker.inboxes.len()),
        ctx: ctx.clone(),
        handle,
        stream,
        reader,
        me,
        key: None,
        route: None,
        client_id: None,
        username: None,
        slot,
        transport: transport.map(|transport| {
            Box::new(Layers {
                transport,
                tbuf: BytesMut::new(),
            })
        }),
        accepted: false,
        awaiting: None,
        held: Vec::new(),
        orphan: None,
        closed_will: None,
        ledger: None,
        persistent: false,
        stored: false,
        unsafe_output: false,
        step: Vec::new(),
        pace: Pace::new(now),
        registered,
    });
    drive(ctx, task, None)
}

/// Runs the connection, starting with `wake` if given, parked whenever it is idle, until
/// it closes; then its session's fate is settled (`finish`). Ends early (the connection
/// open) when the connection parks outside its task: `park::resume` starts a new one.
async fn drive(ctx: Rc<ThreadCtx>, mut task: Box<ConnTask>, mut wake: Option<Wake>) {
    // Each future is awaited in its own `let` statement and each value is moved out of the
    // local holding it: temporaries of a `while let` or `match` scrutinee would stay in this
    // future for the whole loop body, and every idle connection would carry them.
    loop {
        let ran = task.run(wake.take()).await;
        if let Ran::Closed = ran {
            break;
        }
        let (parked, handle, reader) = match task.park() {
            Ok(p) => p,
            Err(t) => {
                task = t;
                continue;
            }
        };
        let (parked, reader) = match park::park(&ctx, &handle, parked, reader) {
            Ok(()) => return,
            Err(p) => p,
        };
        let (t, w) = park::sleep(parked, handle, reader, &ctx).await;
        (task, wake) = (t, Some(w));
    }
    // Boxed: closing is rare and its future large; the idle task stays small. (Boxed in its
    // own statement: a temporary of the awaiting statement would keep its place in this
    // future.)
    let finish = Box::pin(task.finish());
    finish.await;
    ctx.remove_conn(task.me.conn);
    ctx.stats().connections.fetch_sub(1, Relaxed);
}

/// Returns `Pending` once (waking its task, which goes to the back of the executor's queue),
/// then `Ready`: the tasks woken before it run first.
pub(super) struct YieldOnce(pub(super) bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// How `ConnTask::run` ended.
enum Ran {
    /// The connection closed (the socket too).
    Closed,
    /// The connection is idle and may be parked.
    Idle,
}

/// Why the connection task woke up.
enum Wake {
    /// The socket is readable (or the last read filled the buffer).
    Read,
    Mail,
    Timer,
}

/// The transport layers of a TLS or WebSocket connection.
struct Layers {
    transport: Transport,
    /// Plaintext scratch between `transport` and the connection (empty between calls).
    tbuf: BytesMut,
}

struct ConnTask {
    ctx: Rc<ThreadCtx>,
    handle: Rc<ConnHandle>,
    stream: TcpStream,
    /// The socket's read side; `None` once the input ended.
    reader: Option<Reader>,
    me: ConnRef,
    conn: Connection,
    outbox: Outbox,
    key: Option<SessionKey>,
    route: Option<Arc<Route>>,
    client_id: Option<ClientId>,
    /// The CONNECT's user name (for the ACL).
    username: Option<Arc<str>>,
    /// TLS/WebSocket layers between the socket and `conn`, boxed with their plaintext
    /// scratch buffer (none for plain TCP).
    transport: Option<Box<Layers>>,
    /// The per-source slot of the socket (released on drop).
    slot: Option<SourceSlot>,
    /// `accept_connect` was called.
    accepted: bool,
    /// Waiting for a session handover until this deadline.
    awaiting: Option<Instant>,
    /// Deliveries that arrived while waiting for the handover (with their store entries).
    held: Vec<(Delivery, Option<u64>)>,
    /// A session handed over when no longer waiting (kept for `finish`).
    orphan: Option<Box<Moving>>,
    /// The will from `Event::Closed` (outer `Some` once closed).
    closed_will: Option<Option<Box<Will>>>,
    /// Store queue entries backing the session's pending queue (when `persistent`; boxed
    /// and allocated then, as most sessions are not stored).
    ledger: Option<Box<QueueLedger>>,
    /// The session is stored: its changes are written before output leaves.
    persistent: bool,
    /// The session was stored at some point (its stored state goes when it ends).
    stored: bool,
    /// A store write failed: pending output may acknowledge what is not durable, so
    /// nothing more is written to the socket.
    unsafe_output: bool,
    /// PUBLISHes of the current step waiting for their store commit (bounded by the
    /// events of one step, i.e. by Receive Maximum for QoS 1/2 and the read buffer).
    step: Vec<StepPublish>,
    /// How often the task has been waking up for work (whether it may park).
    pace: Pace,
    /// How the socket is in the thread's parking epoll set (see `park::Parking`).
    registered: park::Registration,
}

impl ConnTask {
    /// Serves the connection, starting with `first` if given (the wake-up that ended its
    /// parking), until it closes or is idle enough to park.
    async fn run(&mut self, mut first: Option<Wake>) -> Ran {
        let mut wbuf = BytesMut::new();
        loop {
            let wake = match first.take() {
                Some(w) => w,
                None => {
                    let deadline = [
                        self.conn.poll_timeout(),
                        self.awaiting,
                        self.pace.park_check(),
                    ]
                    .into_iter()
                    .flatten()
                    .min();
                    wait(&self.ctx, &self.handle, self.reader.as_mut(), deadline).await
                }
            };
            let now = Instant::now();
            let timer = matches!(wake, Wake::Timer);
            self.pace.woke(now, !timer);
            if self.pace.streaming() {
                let fd = self.stream.as_raw_fd();
                self.registered =
                    park::unwatch(&self.ctx, fd, self.reader.as_ref(), self.registered);
            }
            match wake {
                Wake::Read => {
                    self.read_input(now);
                    // Input never starves the mailbox.
                    if !self.handle.is_empty() {
                        self.read_mail(now).await;
                    }
                }
                Wake::Mail => self.read_mail(now).await,
                Wake::Timer => {
                    if let Some(r) = self.reader.as_mut() {
                        r.on_timer(now);
                    }
                    self.conn.handle_timeout(now);
                    if self.awaiting.is_some_and(|d| d <= now) {
                        // The previous holder never answered: start afresh rather than
                        // refuse the client forever.
                        tracing::warn!(client_id = ?self.client_id, "session handover timed out");
                        self.awaiting = None;
                        Box::pin(self.accept_held(now, None, false)).await;
                    }
                }
            }
            let handoffs = self.ctx.local_handoffs();
            self.process_events(now).await;
            self.flush_outbox().await;
            if self.ctx.local_handoffs() != handoffs {
                // This step woke subscribers' tasks on this thread: let them write their
                // deliveries before this connection's own output (its PUBACKs), so that a
                // delivery does not wait for the publisher's write (RESULTS.md, session 6).
                YieldOnce(false).await;
            }
            // Write-ahead: the session's changes are durable before the output showing them.
            if !(self.persist().await && self.write_output(&mut wbuf).await) {
                self.conn.socket_closed(Instant::now());
                self.process_events(Instant::now()).await;
            }
            if self.pace.sync_due(timer, self.conn.is_closed()) {
                self.sync_stats();
            }
            if self.conn.is_closed() {
                // Flush the final CONNACK/DISCONNECT, then close the socket.
                if self.persist().await {
                    let _ = self.write_output(&mut wbuf).await;
                }
                break;
            }
            if self.may_park() {
                return Ran::Idle;
            }
        }
        self.reader = None;
        Box::pin(self.close_socket()).await;
        Ran::Closed
    }

    /// [`Self::persist_step`], its future boxed (it is large) and only when the session is
    /// stored: the common, non-persistent step allocates nothing.
    async fn persist(&mut self) -> bool {
        if self.unsafe_output {
            return false;
        }
        if !self.persistent {
            return true;
        }
        Box::pin(self.persist_step()).await
    }

    /// Ends the transport (TLS close_notify, WebSocket close frame), then shuts the TCP
    /// socket down.
    async fn close_socket(&mut self) {
        if let Some(t) = self.transport.as_deref_mut().map(|l| &mut l.transport) {
            t.close();
            let mut w = BytesMut::new();
            let _ = t.send(&[], &mut w);
            if !w.is_empty() {
                let limit = Duration::from_secs(self.ctx.broker.config.limits.write_timeout_secs);
                let _ = compio::time::timeout(limit, self.stream.write_all(w)).await;
            }
        }
        // One non-blocking system call, not the runtime's shutdown: on epoll that is a
        // round trip through compio's blocking thread pool, on io_uring a suspension until
        // the next turn of the ring (see `write::shutdown_now`).
        write::shutdown_now(self.stream.as_raw_fd());
    }

    /// Reads what the socket has into the thread's shared buffer and feeds it to the
    /// session; drops the reader at the end of the stream or once the session closed.
    fn read_input(&mut self, now: Instant) {
        let Some(mut r) = self.reader.take() else {
            return;
        };
        if self.registered == park::Registration::Edge {
            // This read sees whatever input the thread's epoll set flagged so far: left
            // flagged, it would resume the connection for nothing right after it parks
            // (a new connection's socket is reported once its CONNECT is there, and its
            // task usually reads the CONNECT before the event is collected; on io_uring a
            // socket stays in the set from its first parking on, and its reader polls it
            // too).
            self.handle.take_input();
        }
        let mut buf = self.ctx.take_read_buf();
        let closed = match r.read(&self.ctx, &mut buf, now) {
            ReadNow::Data(data) => {
                self.receive(now, data);
                false
            }
            ReadNow::WouldBlock => {
                self.count_deferral_ran_out(&r);
                false
            }
            ReadNow::Closed => true,
        };
        self.ctx.put_read_buf(buf);
        if closed {
            self.conn.socket_closed(now);
        } else if !self.conn.is_closed() {
            self.reader = Some(r);
        }
    }

    /// A read found nothing on a plain TCP connection that has not sent a byte yet: with
    /// `listeners.tcp.defer_accept_secs` on, the kernel handed it over because its deferral
    /// ran out (a silent client), counted as the `defer_accept` limit.
    fn count_deferral_ran_out(&self, r: &Reader) {
        if !self.accepted
            && self.transport.is_none()
            && !r.had_data()
            && self.ctx.broker.config.listeners.tcp.defer_accept_secs > 0
        {
            self.ctx.stats().hit_limit(Limit::DeferAccept);
        }
    }

    /// Feeds bytes read from the socket to the session, through the transport if any. A
    /// transport error or close is the end of the stream for the session.
    fn receive(&mut self, now: Instant, wire: &[u8]) {
        let Some(Layers { transport: t, tbuf }) = self.transport.as_deref_mut() else {
            self.conn.handle_bytes(now, wire);
            return;
        };
        tbuf.clear();
        let result = t.receive(wire, tbuf);
        if !tbuf.is_empty() {
            self.conn.handle_bytes(now, tbuf);
        }
        tbuf.clear();
        if let Err(e) = &result {
            tracing::debug!(client_id = ?self.client_id, error = %e, "transport error");
        }
        if (t.wants_close() || result.is_err()) && !self.conn.is_closed() {
            self.conn.socket_closed(now);
        }
    }

    /// Handles the mailbox: deliveries at once (the common case: a subscriber woken by
    /// a publisher), anything else through [`Self::drain_mailbox`], whose future is boxed
    /// (it is large, and one allocation per delivery step is avoidable).
    async fn read_mail(&mut self, now: Instant) {
        if !self.handle.only_deliveries() {
            return Box::pin(self.drain_mailbox(now)).await;
        }
        let mut mail = self.handle.take_all();
        for msg in mail.drain(..) {
            if let ConnMsg::Deliver(d, seq) = msg {
                self.deliver(now, d, seq);
            }
        }
        self.handle.give_back(mail);
    }

    async fn drain_mailbox(&mut self, now: Instant) {
        for msg in self.handle.take_all() {
            match msg {
                ConnMsg::Deliver(d, seq) => self.deliver(now, d, seq),
                ConnMsg::Release | ConnMsg::Discard => {
                    self.conn.disconnect(ReasonCode::SESSION_TAKEN_OVER);
                }
                ConnMsg::Shutdown => self.conn.disconnect(ReasonCode::SERVER_SHUTTING_DOWN),
                ConnMsg::NoSession => {
                    if self.awaiting.take().is_some() && !self.conn.is_closed() {
                        self.accept_held(now, None, false).await;
                    }
                }
                ConnMsg::Handover(session) => {
                    if self.awaiting.take().is_some() && !self.conn.is_closed() {
                        self.accept_held(now, Some(session), false).await;
                    } else {
                        self.orphan = Some(session);
                    }
                }
            }
        }
    }

    /// Answers the CONNECT: resumes `session` (Session Present 1) or starts afresh, then
    /// delivers what arrived meanwhile. `replacing`: a clean start replaced a session of
    /// the same client id. With the store on, a session that is to outlive the connection
    /// is stored first (a fresh one is refused with the store's reason code if that fails).
    async fn accept_held(&mut self, now: Instant, session: Option<Box<Moving>>, replacing: bool) {
        let present = session.is_some();
        let session = if self.ctx.broker.durable.is_enabled() {
            match self.prepare_stored(now, session, replacing).await {
                Ok(s) => s,
                Err(code) => {
                    self.conn.reject_connect(code);
                    // The registry entry goes with this connection (see `decide`).
                    self.accepted = true;
                    return;
                }
            }
        } else {
            session.map(|m| m.session)
        };
        self.conn.accept_connect(now, session, present);
        self.accepted = true;
        for (d, seq) in std::mem::take(&mut self.held) {
            self.deliver(now, d, seq);
        }
    }

    fn deliver(&mut self, now: Instant, d: Delivery, seq: Option<u64>) {
        if self.awaiting.is_some() {
            if self.held.len() < self.ctx.broker.config.mqtt.max_queued_messages {
                self.held.push((d, seq));
            } else {
                count_drop(self.ctx.stats(), halyard_session::Dropped::QueueFull);
            }
            return;
        }
        let message = (self.persistent && seq.is_some()).then(|| d.message.clone());
        let outcome = {
            let mut cache = self.ctx.publish_cache.borrow_mut();
            self.conn.deliver_cached(now, d, &mut cache)
        };
        if let Some(m) = &message {
            match outcome {
                DeliverOutcome::Queued => self.ledger_mut().pushed_message(seq, m),
                DeliverOutcome::Sent | DeliverOutcome::Dropped(_) => {
                    self.ledger_mut().consumed_message(seq, m);
                }
            }
        } else if self.persistent {
            match outcome {
                DeliverOutcome::Queued => self.ledger_mut().pushed(seq),
                DeliverOutcome::Sent | DeliverOutcome::Dropped(_) => {
                    self.ledger_mut().consumed(seq)
                }
            }
        }
        if let DeliverOutcome::Dropped(reason) = outcome {
            // Connection-level drops are counted from ConnectionStats in `sync_stats`;
            // queue drops are the session's and counted here.
            if matches!(
                reason,
                halyard_session::Dropped::QueueFull
                    | halyard_session::Dropped::Qos0Offline
                    | halyard_session::Dropped::Expired
            ) {
                count_drop(self.ctx.stats(), reason);
            }
        }
    }

    /// Answers the session's events, if any. PUBLISHes on a node without store or cluster
    /// (nothing to wait for: routed, then acknowledged at once) are answered in place; any
    /// other event, and every event once the store or a cluster is on, goes through
    /// [`Self::answer_events`], whose future runs boxed, so that the task's own future does
    /// not carry its (large) state while idle (and a publisher's step allocates no box).
    async fn process_events(&mut self, now: Instant) {
        if !self.conn.has_events() && self.step.is_empty() {
            return;
        }
        let broker = &self.ctx.broker;
        let first = if self.step.is_empty()
            && !broker.durable.is_enabled()
            && broker.cluster.get().is_none()
        {
            match self.answer_publishes(now) {
                None => return,
                other => other,
            }
        } else {
            None
        };
        Box::pin(self.answer_events(now, first)).await;
    }

    /// Answers the PUBLISHes at the front of the session's events (store off, no cluster:
    /// [`Self::on_publish`] returns no wait); returns the first other event, if any.
    fn answer_publishes(&mut self, now: Instant) -> Option<Event> {
        loop {
            match self.conn.poll_event()? {
                Event::Publish { packet_id, message } => {
                    let (code, wait, blocked) = self.on_publish(&message, Forward::Now);
                    // Only a cluster makes an acknowledgement wait or a copy queue: the
                    // arm of `answer_events` that handles those is not needed here.
                    debug_assert!(
                        wait.is_none() && !blocked,
                        "PUBLISH waits without a cluster"
                    );
                    if let Some(id) = packet_id {
                        self.conn.complete_publish(now, id, code);
                    }
                }
                other => return Some(other),
            }
        }
    }

    /// Answers the session's events, starting with `first` (taken from them already).
    async fn answer_events(&mut self, now: Instant, mut first: Option<Event>) {
        // Store off, in a cluster: the PUBLISHes of this step whose acknowledgement waits
        // for other nodes (or a retained commit), answered in arrival order after the loop;
        // their copies are already on their way, so the waits overlap.
        let mut waiting: Vec<(Option<u16>, ReasonCode, Option<RetainWait>)> = Vec::new();
        let mut forward = Forward::Now;
        while let Some(event) = first.take().or_else(|| self.conn.poll_event()) {
            match event {
                Event::Connect(req) => Box::pin(self.on_connect(req, now)).await,
                Event::Publish { packet_id, message } => {
                    if self.ctx.broker.durable.is_enabled() {
                        self.stage_publish(now, packet_id, message);
                    } else {
                        let (code, wait, blocked) = self.on_publish(&message, forward);
                        if blocked {
                            // A copy waits for room in a link queue: later copies queue
                            // behind it (when awaited, in order).
                            forward = Forward::Later;
                        }
                        if wait.is_some() || !waiting.is_empty() {
                            waiting.push((packet_id, code, wait));
                        } else if let Some(id) = packet_id {
                            self.conn.complete_publish(now, id, code);
                        }
                    }
                }
                Event::Subscribe {
                    packet_id,
                    requests,
                } => Box::pin(self.on_subscribe(now, packet_id, requests)).await,
                Event::Unsubscribe { packet_id, filters } => {
                    let codes = filters
                        .iter()
                        .map(|f| match self.key {
                            Some(key) if self.ctx.broker.remove_subscription(key, f) => {
                                ReasonCode::SUCCESS
                            }
                            _ => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                        })
                        .collect();
                    self.ctx.broker.update_subscription_gauge();
                    self.conn.complete_unsubscribe(now, packet_id, codes);
                }
                Event::Closed { will, reason } => {
                    tracing::debug!(client_id = ?self.client_id, ?reason, "connection closed");
                    match &reason {
                        halyard_session::CloseReason::Protocol(e)
                            if e.reason_code() == ReasonCode::PACKET_TOO_LARGE =>
                        {
                            self.ctx.stats().hit_limit(Limit::MaxPacketSize);
                        }
                        halyard_session::CloseReason::ConnectTimeout => {
                            self.ctx.stats().hit_limit(Limit::ConnectTimeout);
                        }
                        halyard_session::CloseReason::PartialPacketTimeout => {
                            self.ctx.stats().hit_limit(Limit::PartialPacketTimeout);
                        }
                        _ => {}
                    }
                    self.closed_will = Some(will);
                }
            }
        }
        if !waiting.is_empty() {
            Box::pin(self.answer_forwarded(waiting)).await;
        }
        if !self.step.is_empty() {
            Box::pin(self.complete_staged()).await;
        }
    }

    /// Acknowledges PUBLISHes once their waits resolved, in arrival order.
    async fn answer_forwarded(
        &mut self,
        waiting: Vec<(Option<u16>, ReasonCode, Option<RetainWait>)>,
    ) {
        for (packet_id, code, wait) in waiting {
            self.acknowledge_after(packet_id, code, wait).await;
        }
    }

    /// Acknowledges a PUBLISH with `code` once its cluster `wait` resolved: a failed
    /// retained update turns a success into its refusal code (5.0) or closes the connection
    /// (3.1.1 cannot refuse a PUBLISH).
    pub(super) async fn acknowledge_after(
        &mut self,
        packet_id: Option<u16>,
        mut code: ReasonCode,
        wait: Option<RetainWait>,
    ) {
        if let Some(wait) = wait
            && let Err(e) = wait.await
            && code == ReasonCode::SUCCESS
        {
            match crate::cluster::retained::refusal(self.conn.protocol_version(), &e) {
                Some(refused) => code = refused,
                None => {
                    self.conn.disconnect(ReasonCode::UNSPECIFIED_ERROR);
                    return;
                }
            }
        }
        if let Some(id) = packet_id {
            self.conn.complete_publish(Instant::now(), id, code);
        }
    }

    /// Answers a CONNECT (see [`Self::answer_connect`]), then counts it for its source, and
    /// the session it started, in one record. (The request stays boxed, as the session
    /// emitted it: moving it into this future would copy it once more.)
    async fn on_connect(&mut self, req: Box<ConnectRequest>, now: Instant) {
        self.answer_connect(req, now).await;
        crate::xdp::count_connect(
            &self.ctx.broker.metrics,
            self.slot.as_ref(),
            self.key.is_some() && !self.conn.is_closed(),
        );
    }

    async fn answer_connect(&mut self, mut req: Box<ConnectRequest>, now: Instant) {
        if self.ctx.shutting_down.get() {
            self.conn.reject_connect(ReasonCode::SERVER_UNAVAILABLE);
            return;
        }
        // mTLS with `use_identity_as_username`: the certificate's name replaces the username.
        if let Some(id) = self
            .transport
            .as_ref()
            .and_then(|l| l.transport.peer_identity())
            && id.use_as_username
        {
            match id.username_override() {
                Some(name) => req.username = Some(name.into()),
                None => {
                    // 0x87 Not authorized (3.1.1: 0x05).
                    self.conn.reject_connect(ReasonCode::NOT_AUTHORIZED);
                    return;
                }
            }
        }
        let broker = self.ctx.broker.clone();
        if let Err(code) = self.check_connect(&req).await {
            tracing::debug!(client_id = %req.client_id, code, "connect refused by auth");
            self.conn.reject_connect(ReasonCode(code));
            return;
        }
        self.client_id = Some(req.client_id.clone());
        self.username = req.username.as_deref().map(Arc::from);
        // In a cluster, the client's session may be on another node: bring it here first
        // (or, with Clean Start, have it ended there).
        crate::cluster::session::import(&self.ctx, &req.client_id, req.clean_start).await;
        match broker.claim(&req.client_id, req.clean_start, self.me) {
            Err(e) => {
                tracing::warn!(client_id = %req.client_id, error = %e, "connect refused");
                self.ctx.stats().hit_limit(Limit::MaxSessions);
                self.conn.reject_connect(ReasonCode::QUOTA_EXCEEDED);
            }
            Ok(Claim::New { key, route }) => {
                self.start(key, route);
                self.accept_held(now, None, false).await;
            }
            Ok(Claim::Replaced {
                key,
                route,
                old_key,
                old_thread,
            }) => {
                self.start(key, route);
                self.accept_held(now, None, true).await;
                broker
                    .send_to(old_thread, ThreadMsg::Discard { key: old_key })
                    .await;
            }
            Ok(Claim::Resume {
                key,
                route,
                from_thread,
            }) => {
                self.awaiting = Some(now + broker.session_config.connect_timeout);
                if from_thread == self.ctx.index {
                    self.ctx.release(key).await;
                    self.start(key, route);
                } else {
                    self.start(key, route);
                    broker
                        .send_to(from_thread, ThreadMsg::Release { key })
                        .await;
                }
                // A local release may have handed the session over already.
                if !self.handle.is_empty() {
                    self.drain_mailbox(now).await;
                }
            }
        }
    }

    /// Bans, flapping, credentials (PBKDF2 on a blocking thread when a user name is given)
    /// and the will topic's ACL; `Err` holds the 5.0 reason code.
    async fn check_connect(&self, req: &ConnectRequest) -> Result<(), u8> {
        let security = self.ctx.broker.security.clone();
        let peer = self.slot.as_ref().map(SourceSlot::ip);
        let client_id = req.client_id.clone();
        let username = req.username.as_deref().map(str::to_owned);
        let password = req.password.clone();
        let check = move || {
            security.check_connect(&client_id, username.as_deref(), password.as_deref(), peer)
        };
        if req.username.is_some() {
            // A blocking-pool thread that panicked counts as a refusal (0x80).
            compio::runtime::spawn_blocking(check)
                .await
                .unwrap_or(Err(0x80))?;
        } else {
            check()?;
        }
        if let Some(will) = &req.will {
            let security = &self.ctx.broker.security;
            if !security.may_write(&req.client_id, req.username.as_deref(), &will.topic) {
                security.count(Denial::NotAuthorized);
                return Err(0x87);
            }
        }
        Ok(())
    }

    fn start(&mut self, key: SessionKey, route: Arc<Route>) {
        self.key = Some(key);
        self.route = Some(route);
        self.ctx.set_conn_session(key, self.me.conn);
    }

    /// Routes a PUBLISH; the code for its PUBACK/PUBREC: 0x87 when the ACL refuses the topic
    /// (5.0; a 3.1.1 client gets a normal acknowledgement and the message is dropped). In a
    /// cluster, also what a QoS 1/2 acknowledgement waits for (the destination nodes, and
    /// the commit of a retained update), and whether a copy is still to be queued when that
    /// is awaited ([`crate::cluster::AckWait::blocked`]).
    fn on_publish(
        &mut self,
        message: &Arc<Message>,
        forward: Forward,
    ) -> (ReasonCode, Option<RetainWait>, bool) {
        if let Some(code) = self.publish_denied(message) {
            return (code, None, false);
        }
        let broker = &self.ctx.broker;
        let retained = if message.retain {
            publish::update_retained(broker, self.ctx.stats(), message)
        } else {
            None
        };
        let (_, cluster_acks) = publish::route_acked(broker, message, &mut self.outbox, forward);
        let blocked = cluster_acks.as_ref().is_some_and(AckWait::blocked);
        let wait = crate::cluster::retained::ack_wait(message.qos, cluster_acks, retained);
        (ReasonCode::SUCCESS, wait, blocked)
    }

    /// The acknowledgement code of a PUBLISH the ACL refuses (0x87 for 5.0; a 3.1.1 client
    /// gets a normal acknowledgement and the message is dropped); `None` when allowed.
    fn publish_denied(&self, message: &Message) -> Option<ReasonCode> {
        let broker = &self.ctx.broker;
        let client_id = self.client_id.as_deref().unwrap_or("");
        if broker
            .security
            .may_write(client_id, self.username.as_deref(), &message.topic)
        {
            return None;
        }
        broker.security.count(Denial::Publish);
        Some(if self.conn.protocol_version() == ProtocolVersion::V5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        })
    }

    async fn on_subscribe(
        &mut self,
        now: Instant,
        packet_id: u16,
        requests: Vec<SubscribeRequest>,
    ) {
        let (Some(key), Some(route), Some(client_id)) =
            (self.key, self.route.clone(), self.client_id.clone())
        else {
            return;
        };
        let broker = self.ctx.broker.clone();
        let security = &broker.security;
        // Every filter of the packet goes into the trie in one batch: the levels a filter
        // passes through are copied once per SUBSCRIBE instead of once per filter, which is
        // what a SUBSCRIBE carrying thousands of filters (a gateway, a bridge) costs most.
        // Per request: whether it was new (else it replaced a subscription), or its code.
        // Inline for up to 8 filters, the common SUBSCRIBE: no vector allocated for it.
        let inserted: smallvec::SmallVec<[Result<bool, ReasonCode>; 8]> = broker.trie.batch(|b| {
            requests
                .iter()
                .map(|r| {
                    let topic_filter = r.status.as_ref().map_err(|code| *code)?;
                    if !security.may_subscribe(&client_id, self.username.as_deref(), &r.filter) {
                        security.count(Denial::Subscribe);
                        return Err(ReasonCode::NOT_AUTHORIZED);
                    }
                    let value = SubValue {
                        route: route.clone(),
                        client_id: client_id.clone(),
                        username: self.username.clone(),
                        options: r.options,
                        subscription_id: r.subscription_id,
                    };
                    // Checked by the session: the trie checks only its size limits.
                    match &r.share_group {
                        Some(group) => b.insert_shared_checked(group, topic_filter, key, value),
                        None => b.insert_checked(topic_filter, key, value),
                    }
                    .map(|replaced| replaced.is_none())
                    .map_err(|_| ReasonCode::TOPIC_FILTER_INVALID)
                })
                .collect()
        });
        let mut granted = Vec::with_capacity(requests.len());
        let mut retained: Vec<Delivery> = Vec::new();
        for (r, inserted) in requests.iter().zip(inserted) {
            let (new, topic_filter) = match (inserted, r.status.as_ref()) {
                (Ok(new), Ok(t)) => (new, t.as_str()),
                // (A request the session refused was not inserted: `Err` already.)
                (Err(code), _) | (Ok(_), Err(&code)) => {
                    granted.push(code);
                    continue;
                }
            };
            if new {
                crate::cluster::subscribed(&broker, &r.filter);
            }
            granted.push(ReasonCode::granted(r.options.qos));
            let send_retained = match r.options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendAtSubscribeIfNew => r.is_new,
                RetainHandling::DoNotSend => false,
            };
            // Retained messages are not sent for shared subscriptions [MQTT-3.8.4-?].
            if send_retained && r.share_group.is_none() {
                let username = self.username.as_deref();
                broker.retained.for_each_match(topic_filter, |_, m| {
                    if !broker.security.may_read(&client_id, username, &m.topic) {
                        return;
                    }
                    retained.push(Delivery {
                        message: m.clone(),
                        qos: min_qos(r.options.qos, m.qos),
                        retain: true,
                        subscription_ids: r.subscription_id.into_iter().collect(),
                        packet_id: None,
                    });
                });
            }
        }
        broker.update_subscription_gauge();
        crate::cluster::route_barrier(&broker).await;
        self.conn
            .complete_subscribe(now, packet_id, requests, granted);
        for d in retained {
            self.deliver(now, d, None);
        }
    }

    /// Sends collected deliveries: local ones straight to the thread's tables, others as one
    /// batch per destination thread. A full inbox drops QoS 0 deliveries (counted) and waits
    /// for room for QoS 1/2 ones (back-pressure on this publisher).
    async fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        // Deliveries for this thread only: handed to the mailboxes at once, without the
        // boxed future of the general path (one per routed PUBLISH otherwise).
        if let Some(batch) = self.outbox.take_only(self.ctx.index) {
            self.ctx.deliver_local(batch);
            return;
        }
        Box::pin(self.send_batches()).await;
    }

    async fn send_batches(&mut self) {
        // Taken out first (sending may wait); inline for up to four threads, not a list
        // allocated for every step that routed to another thread.
        let batches: smallvec::SmallVec<[(usize, Vec<crate::engine::Routed>); 4]> =
            self.outbox.drain().collect();
        for (thread, mut batch) in batches {
            if thread == self.ctx.index {
                self.ctx.deliver_local(batch);
                continue;
            }
            let Some(tx) = self.ctx.broker.inboxes.get(thread) else {
                continue;
            };
            // Kept route and client id `Arc`s are dropped here, where they were cloned.
            crate::engine::hand_over(&mut batch);
            match tx.try_send(ThreadMsg::Deliver(batch)) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(ThreadMsg::Deliver(batch))) => {
                    let stats = self.ctx.stats();
                    stats.hit_limit(Limit::InboxCapacity);
                    let (reliable, best_effort): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .partition(|r| r.delivery.qos != QoS::AtMostOnce);
                    for _ in &best_effort {
                        stats.drop_message(DropReason::InboxFull);
                    }
                    if !reliable.is_empty() {
                        let _ = tx.send_async(ThreadMsg::Deliver(reliable)).await;
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Moves the connection's output to the socket; false when the socket failed.
    async fn write_output(&mut self, wbuf: &mut BytesMut) -> bool {
        if self.unsafe_output {
            return false;
        }
        let max = self.ctx.broker.config.limits.max_write_buffer_bytes;
        let mut ok = true;
        loop {
            match self.transport.as_deref_mut() {
                None => while wbuf.len() < max && self.conn.poll_transmit(wbuf) {},
                Some(Layers { transport: t, tbuf }) => {
                    tbuf.clear();
                    while tbuf.len() < max && self.conn.poll_transmit(tbuf) {}
                    // Always, even when empty: handshake bytes, pongs and close replies.
                    if let Err(e) = t.send(tbuf, wbuf) {
                        tracing::debug!(client_id = ?self.client_id, error = %e, "transport send failed");
                        ok = false;
                    }
                    tbuf.clear();
                }
            }
            if wbuf.is_empty() {
                return ok;
            }
            // Straight to the socket first; the runtime's write only for what it leaves.
            match write::send_now(self.stream.as_raw_fd(), wbuf) {
                write::SendNow::Sent(n) if n == wbuf.len() => {
                    wbuf.clear();
                    if wbuf.capacity() > KEEP_WRITE_CAPACITY {
                        *wbuf = BytesMut::new();
                    }
                    continue;
                }
                write::SendNow::Sent(n) => {
                    wbuf.advance(n);
                }
                write::SendNow::Failed => return false,
            }
            let buf = std::mem::take(wbuf);
            let limit = Duration::from_secs(self.ctx.broker.config.limits.write_timeout_secs);
            // Boxed: the write's future is large and the idle task should not carry it.
            let Ok(BufResult(res, mut buf)) =
                Box::pin(compio::time::timeout(limit, self.stream.write_all(buf))).await
            else {
                tracing::debug!(client_id = ?self.client_id, "write timed out: slow consumer");
                self.ctx.stats().hit_limit(Limit::WriteTimeout);
                return false;
            };
            buf.clear();
            if buf.capacity() <= KEEP_WRITE_CAPACITY {
                *wbuf = buf;
            }
            if res.is_err() {
                return false;
            }
        }
    }

    /// The store ledger, allocated if it was not.
    fn ledger_mut(&mut self) -> &mut QueueLedger {
        self.ledger.get_or_insert_with(Box::default)
    }

    /// Adds the connection's counter deltas to the thread's metrics. Runs after every step
    /// (a streaming connection's: after every [`park::STATS_SYNC_STEPS`], see
    /// `Pace::sync_due`), so it only touches the counters that moved (a step of a busy connection moves two to
    /// four of them), and a streaming connection keeps its counters' allocation between
    /// steps (one that may go idle gives it back).
    fn sync_stats(&mut self) {
        if let Some(l) = self.transport.as_deref_mut() {
            self.ctx
                .broker
                .metrics
                .transport
                .add(&l.transport.take_stats());
        }
        // Deltas since the last call: the connection zeroes its counters.
        let s = if self.pace.streaming() {
            self.conn.take_stats_kept()
        } else {
            self.conn.take_stats()
        };
        let t = self.ctx.stats();
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        };
        add(&t.bytes_received, s.bytes_in);
        add(&t.bytes_sent, s.bytes_out);
        for q in 0..3 {
            add(&t.received[q], s.publish_in[q]);
            add(&t.sent[q], s.publish_out[q]);
        }
        let d = s.dropped;
        let dropped = |reason: DropReason| &t.dropped[reason as usize];
        add(dropped(DropReason::TooLarge), d.too_large);
        add(dropped(DropReason::TooLarge), d.unencodable);
        add(dropped(DropReason::OutputFull), d.output_full);
        add(dropped(DropReason::Expired), d.expired);
        add(dropped(DropReason::SessionGone), d.not_connected);
        add(&t.protocol_errors, s.protocol_errors);
        let limit = |l: Limit| &t.limit_hits[l as usize];
        add(limit(Limit::MaxSubscriptions), s.subscription_limit_hits);
        add(limit(Limit::MaxTopicLevels), s.topic_levels_limit_hits);
        add(limit(Limit::MaxTopicLength), s.topic_length_limit_hits);
    }

    /// After close: decide the session's fate (park offline, hand over, or end) and the
    /// will's (publish now, after its delay, or never).
    async fn finish(&mut self) {
        let now = Instant::now();
        if !self.conn.is_closed() {
            self.conn.socket_closed(now);
        }
        self.process_events(now).await;
        self.flush_outbox().await;
        // Deliveries that raced with the close go into the session (if it is kept).
        let mut late = Vec::new();
        for msg in self.handle.take_all() {
            match msg {
                ConnMsg::Handover(s) => self.orphan = Some(s),
                ConnMsg::NoSession => {}
                ConnMsg::Deliver(d, seq) => late.push((d, seq)),
                ConnMsg::Release | ConnMsg::Discard | ConnMsg::Shutdown => {}
            }
        }
        let (Some(key), Some(client_id)) = (self.key, self.client_id.clone()) else {
            return;
        };
        let will = self.closed_will.take().flatten().map(|w| *w);
        let filters: Vec<String> = self
            .conn
            .session()
            .map(|s| s.subscriptions().filters())
            .unwrap_or_default();
        let protocol_version = self.protocol_level();
        let conn = std::mem::replace(
            &mut self.conn,
            Connection::new(self.ctx.broker.session_config.clone(), now),
        );
        let ledger = self.ledger.take().map(|l| *l).unwrap_or_default();
        let mut session = conn
            .into_session()
            .map(|session| {
                Box::new(Moving {
                    session,
                    ledger,
                    protocol_version,
                })
            })
            .or(self.orphan.take());
        self.enqueue_late(session.as_deref_mut(), late, now);
        // Store writes come before the registry learns the session is offline: once it
        // does, a new connection may claim it.
        let (will, stored_will) = self
            .store_closing(&client_id, key, session.as_deref_mut(), will, now)
            .await;
        // Deliveries (or a handover) that arrived while the store was written; nothing can
        // arrive from here to the park or handover below (no await between them).
        let mut late = Vec::new();
        for msg in self.handle.take_all() {
            match msg {
                ConnMsg::Handover(s) if session.is_none() => session = Some(s),
                ConnMsg::Handover(s) => self.orphan = Some(s),
                ConnMsg::Deliver(d, seq) => late.push((d, seq)),
                ConnMsg::NoSession | ConnMsg::Release | ConnMsg::Discard | ConnMsg::Shutdown => {}
            }
        }
        self.enqueue_late(session.as_deref_mut(), late, now);
        let fate = self.decide(&client_id, key, session.is_some());
        self.ctx.clear_conn_session(key, self.me.conn);
        let ctx = self.ctx.clone();
        if stored_will && !matches!(fate, Fate::Park) {
            let _ = ctx.broker.durable.delete_will(&client_id).await;
        }
        match fate {
            Fate::Park => {
                if let Some(s) = session {
                    let will = self.will_now_or_later(&client_id, will, true);
                    ctx.park_offline(key, s, will, now);
                }
            }
            Fate::Wait => {}
            Fate::HandTo(to) => {
                if let Some(s) = session {
                    ctx.send_handover(to, key, s).await;
                } else {
                    // The session ended with this connection (expiry 0): drop its
                    // subscriptions and let the claimant start afresh instead of waiting
                    // for a handover that never comes.
                    ctx.broker
                        .remove_subscriptions(key, filters.iter().map(String::as_str));
                    ctx.send_no_session(to).await;
                }
                // The session continues on a new connection: a delayed will is cancelled.
                let _ = self.will_now_or_later(&client_id, will, false);
            }
            Fate::End => {
                let extra: Vec<String> = session
                    .map(|s| s.session.subscriptions().filters())
                    .unwrap_or_default();
                ctx.broker.remove_subscriptions(
                    key,
                    filters.iter().chain(extra.iter()).map(String::as_str),
                );
                if let Some(w) = will {
                    ctx.publish_will(&client_id, &w, false);
                }
            }
        }
    }

    /// Puts deliveries that raced with the close into the kept session (tracking their store
    /// entries), or counts them as dropped when the session ends.
    fn enqueue_late(
        &self,
        session: Option<&mut Moving>,
        late: Vec<(Delivery, Option<u64>)>,
        now: Instant,
    ) {
        let Some(m) = session else {
            for _ in late {
                self.ctx.stats().drop_message(DropReason::SessionGone);
            }
            return;
        };
        let stored = m.session.tracks_changes();
        for (d, seq) in late {
            let message = d.message.clone();
            match m.session.enqueue(now, d) {
                Ok(()) if stored => m.ledger.pushed_message(seq, &message),
                Ok(()) => {}
                Err(reason) => {
                    if stored {
                        m.ledger.consumed(seq);
                    }
                    count_drop(self.ctx.stats(), reason);
                }
            }
        }
    }

    /// Publishes a will with no delay now; returns a delayed one when `keep_delayed`.
    fn will_now_or_later(
        &self,
        client_id: &ClientId,
        will: Option<Will>,
        keep_delayed: bool,
    ) -> Option<Will> {
        let w = will?;
        if w.delay() == Duration::ZERO {
            self.ctx.publish_will(client_id, &w, false);
            None
        } else if keep_delayed {
            Some(w)
        } else {
            None
        }
    }

    /// Updates the registry for a closing connection and says what happens to the session.
    fn decide(&self, client_id: &ClientId, key: SessionKey, have_session: bool) -> Fate {
        let broker = &self.ctx.broker;
        let mut reg = broker.registry();
        let fate = match reg.get_mut(client_id) {
            Some(e) if e.key == key && e.conn == Some(self.me) => {
                if have_session {
                    e.conn = None;
                    Fate::Park
                } else if self.accepted {
                    reg.remove(client_id);
                    Fate::End
                } else {
                    // Still waiting for a handover: the session will be parked on arrival.
                    e.conn = None;
                    Fate::Wait
                }
            }
            Some(e) if e.key == key => match e.conn {
                Some(to) => Fate::HandTo(to),
                None => Fate::Park,
            },
            _ => Fate::End,
        };
        let len = reg.len();
        drop(reg);
        broker.update_session_gauge(len);
        fate
    }
}

/// What happens to a closing connection's session.
enum Fate {
    /// Kept offline on this thread.
    Park,
    /// Handed to the connection that claimed it.
    HandTo(ConnRef),
    /// Ended: subscriptions removed, will published.
    End,
    /// Not here yet (in transit); parked when it arrives.
    Wait,
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if a.as_u8() <= b.as_u8() { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an `async fn` taking four arguments returns.
    fn future_size<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The size of the future a function taking three arguments returns.
    fn future_size3<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The size of the future a `&mut self` method taking one more argument returns.
    fn method_future_size<'a, A: 'a, B: 'a, F: Future>(_: fn(&'a mut A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The size of the future of a function taking three values and a reference.
    fn sleep_future_size<'a, A, B, C, D: 'a, F: Future>(_: fn(A, B, C, &'a D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection parked outside its task holds only its boxed `Parked` record (in
    /// its handle), besides the handle and the thread's table entries: no task, no future.
    /// So the record is what these bounds watch first; they fail when it grows. A working
    /// connection (or one parked in its task, the fallback) holds its task's future, so
    /// the working state (`ConnTask`) is boxed and freed when parked, and the rare, large
    /// steps (CONNECT, SUBSCRIBE, store writes, close) are boxed too.
    #[test]
    fn idle_connection_task_is_small() {
        let task = future_size(serve);
        let resumed = future_size3(drive);
        let run = method_future_size(ConnTask::run);
        let sleep = sleep_future_size(park::sleep);
        let parked = std::mem::size_of::<park::Parked>();
        let compact = std::mem::size_of::<halyard_session::ParkedConnection>();
        let session = std::mem::size_of::<halyard_session::Session>();
        let state = std::mem::size_of::<ConnTask>();
        let conn = std::mem::size_of::<Connection>();
        let handle = std::mem::size_of::<ConnHandle>();
        eprintln!(
            "Parked {parked} B (ParkedConnection {compact} B, Session {session} B), ConnHandle \
             {handle} B; serve future {task} B (drive {resumed} B, run {run} B, sleep {sleep} \
             B), ConnTask {state} B (boxed, while working), Connection {conn} B"
        );
        // Measured (debug build, session 6): Parked 384 B (ParkedConnection 240 B, Session
        // 176 B; the socket's reader is rebuilt on resume), ConnHandle 80 B (96 B with the
        // `Rc` counts, a jemalloc size class; 96 B before its timer became one word); serve/drive
        // future 176 B (run 128 B; sleep, the fallback, 88 B with its record boxed and the
        // reader). Session 5 kept the record and the reader in every idle task's future
        // (504 B, plus the task header and an armed poll operation); before parking
        // (session 4) the serve future was 1248 B. Grow the bounds only with a reason: every
        // idle connection pays it (384 B is also a jemalloc size class).
        assert!(parked <= 384, "Parked {parked} B");
        assert!(compact <= 240, "ParkedConnection {compact} B");
        assert!(session <= 176, "Session {session} B");
        assert!(handle <= 80, "ConnHandle {handle} B");
        assert!(task <= run + 48, "serve future {task} B, run {run} B");
        assert!(resumed <= run + 48, "drive future {resumed} B, run {run} B");
        assert!(sleep <= 96, "sleep {sleep} B");
        assert!(run <= 160, "run future {run} B");
        // 872 B in sessions 9-11 (with the outbox's routing scratch list, 24 B, which
        // routing straight into the per-thread batches made unneeded in session 12), 872 B
        // again since session 12 with the connection's list of SUBSCRIBEs awaiting an answer
        // (24 B, which spares a boxed map per SUBSCRIBE): the 896 B jemalloc class, and only
        // a working connection has one.
        assert!(state <= 872, "ConnTask {state} B");
        assert!(conn <= 504, "Connection {conn} B");
    }
}
