//! `halyard run`: start the I/O threads, the admin server, wait for SIGTERM/SIGINT, stop.

use std::cell::OnceCell;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use compio::runtime::ResumeUnwind as _;
use futures_util::FutureExt;
use futures_util::future::{Either, select};
use halyard_codec::QoS;
use halyard_session::{ClientId, SessionConfig, Will};
use halyard_transport::Acceptor;

use crate::admin::{Admin, ListenerInfo, NodeInfo};
use crate::config::{Backend, Config, QueuePolicy};
use crate::durable::{Durability, RestoredState};
use crate::engine::thread::ThreadCtx;
use crate::engine::{Broker, Moving, ThreadMsg};
use crate::io;
use crate::metrics::{Limit, Metrics};
use crate::security::{Security, SourceSlot};

/// Time the I/O threads get to disconnect their clients on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Maps the `[mqtt]` and `[limits]` sections onto the session layer's configuration.
pub fn session_config(config: &Config) -> SessionConfig {
    let m = &config.mqtt;
    SessionConfig {
        connect_timeout: Duration::from_secs(m.connect_timeout_secs),
        partial_packet_timeout: Duration::from_secs(m.partial_packet_timeout_secs),
        max_keepalive: if m.max_keepalive_secs == 0 {
            u16::MAX
        } else {
            m.max_keepalive_secs
        },
        receive_maximum: m.receive_maximum,
        max_packet_size: m.max_packet_size,
        topic_alias_maximum: m.topic_alias_max,
        max_inflight: m.max_inflight,
        max_queued_messages: m.max_queued_messages,
        queue_policy: match m.queue_policy {
            QueuePolicy::DropNew => halyard_session::QueuePolicy::DropNewest,
            QueuePolicy::DropOldest => halyard_session::QueuePolicy::DropOldest,
        },
        max_pending_output: config.limits.max_write_buffer_bytes,
        retain_available: m.retain_available,
        wildcard_subscription_available: m.wildcard_subscriptions,
        shared_subscription_available: m.shared_subscriptions,
        subscription_identifiers_available: m.subscription_identifiers,
        maximum_qos: QoS::from_u8(m.maximum_qos).unwrap_or(QoS::ExactlyOnce),
        max_client_id_len: m.max_client_id_len,
        max_subscriptions: m.max_subscriptions_per_client,
        topic_limits: halyard_topics::TopicLimits {
            max_levels: m.max_topic_levels,
            max_len: m.max_topic_length,
        },
        max_session_expiry: m.session_expiry_max_secs,
        ..SessionConfig::default()
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the broker until SIGTERM/SIGINT; exit code 0 after a clean stop. With
/// `discard_corrupt`, a corrupt store file is moved aside and the broker starts empty.
pub fn run(config: Config, discard_corrupt: bool) -> ExitCode {
    init_logging(&config.log.level);
    let max_connections = u64::try_from(config.limits.max_connections).unwrap_or(u64::MAX);
    if let Some(warning) = halyard_tune::fd_limit_warning(max_connections) {
        tracing::warn!("{warning}");
    }
    // Signals are registered before anything listens, so an early SIGTERM is not fatal.
    let signal_rt = match io::build_runtime(Backend::Epoll, 64) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    signal_rt.block_on(async move {
        let term = compio::signal::unix::signal(libc::SIGTERM);
        let int = compio::signal::unix::signal(libc::SIGINT);
        let mut signals = Box::pin(select(Box::pin(term), Box::pin(int)));
        // First poll registers the handlers.
        let _ = (&mut signals).now_or_never();
        let first_hup = hup_listener();
        let running = match start(config, discard_corrupt) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let which = wait_for_stop(&mut signals, first_hup, &running).await;
        tracing::info!(signal = which, "shutting down");
        // The listener that fired is gone (its handler reverted to the default action): keep
        // fresh ones registered while stopping, so a repeated SIGTERM/SIGINT (an impatient
        // supervisor) cannot kill the broker before its clients got DISCONNECT and the store
        // committed.
        let mut again = Box::pin(select(
            Box::pin(compio::signal::unix::signal(libc::SIGTERM)),
            Box::pin(compio::signal::unix::signal(libc::SIGINT)),
        ));
        let _ = (&mut again).now_or_never();
        running.stop();
        drop(again);
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// A registered SIGHUP listener.
type HupListener = Pin<Box<dyn Future<Output = std::io::Result<()>>>>;

/// A SIGHUP listener, registered at once (SIGHUP's default action would end the process).
fn hup_listener() -> HupListener {
    let mut h: HupListener = Box::pin(compio::signal::unix::signal(libc::SIGHUP));
    // First poll registers the handler.
    let _ = (&mut h).now_or_never();
    h
}

/// Waits for SIGTERM/SIGINT, reloading the password file, the ACL and the certificates on
/// each SIGHUP (`first_hup` was registered before the listeners opened).
async fn wait_for_stop<F: Future + Unpin>(
    signals: &mut F,
    first_hup: HupListener,
    running: &Running,
) -> &'static str
where
    F::Output: IsTermSignal,
{
    let mut next_hup = first_hup;
    loop {
        match select(&mut *signals, &mut next_hup).await {
            Either::Left((which, _)) => return which.name(),
            Either::Right(_) => {
                // Register the next listener before the old one is dropped, so a SIGHUP never
                // finds the default (terminating) action.
                let fresh = hup_listener();
                next_hup = fresh;
                tracing::info!("SIGHUP: reloading the password file and the ACL");
                running.broker.security.reload();
                crate::listeners::reload_all(&running.acceptors, &running.broker.metrics.transport);
            }
        }
    }
}

/// Names the stop signal a `select(SIGTERM, SIGINT)` resolved with.
trait IsTermSignal {
    fn name(&self) -> &'static str;
}

impl<A, B> IsTermSignal for Either<A, B> {
    fn name(&self) -> &'static str {
        match self {
            Either::Left(_) => "SIGTERM",
            Either::Right(_) => "SIGINT",
        }
    }
}

/// A started broker.
pub struct Running {
    broker: Arc<Broker>,
    threads: Vec<JoinHandle<()>>,
    /// The optional listeners' acceptors, reloaded on SIGHUP.
    acceptors: Vec<(&'static str, Arc<ArcSwap<Acceptor>>)>,
}

impl Running {
    /// Asks every I/O thread to disconnect its clients and waits for them.
    pub fn stop(self) {
        if let Some(c) = self.broker.cluster.get() {
            crate::cluster::depart(c);
        }
        for tx in &self.broker.inboxes {
            let _ = tx.send_timeout(ThreadMsg::Shutdown, Duration::from_secs(1));
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Sockets or runtimes.
    #[error(transparent)]
    Io(#[from] io::IoError),
    /// An I/O thread failed to start.
    #[error("I/O thread {0} failed to start: {1}")]
    Thread(usize, String),
    /// The password file or the ACL file could not be loaded (the error names the file).
    #[error(transparent)]
    Auth(#[from] halyard_auth::AuthError),
    /// The cluster node could not start (bad address, Raft storage, ...).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::StartError),
    /// A TLS/WebSocket listener could not start (TLS errors name the file).
    #[error(transparent)]
    Listener(#[from] crate::listeners::ListenerError),
    /// The durable store could not be opened or read: a corrupt file names itself and the
    /// way out (`halyard store check|repair`, `--discard-corrupt`).
    #[error(transparent)]
    Store(#[from] crate::durable::DurableError),
}

/// Opens the store, binds the listeners and starts the I/O and admin threads.
pub fn start(config: Config, discard_corrupt: bool) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let n = config.io.effective_threads();
    // Before any socket: a store that cannot be opened or read stops the start with its
    // reason (a corrupt file names itself and the way out).
    let durable = Durability::open(&config.store, discard_corrupt)?;
    let restored = durable.load(Instant::now(), &session_config(&config))?;
    if durable.is_enabled() {
        tracing::info!(
            dir = %config.store.dir.display(),
            sessions = restored.sessions.len(),
            retained = restored.retained.len(),
            wills = restored.wills.len(),
            dropped = ?restored.dropped,
            skipped = restored.skipped.len(),
            "store loaded"
        );
    }
    let security = Arc::new(Security::new(&config)?);
    let metrics = Arc::new(Metrics::new(n));
    let _ = metrics.security.set(security.clone());
    let tcp = &config.listeners.tcp;
    let listeners = io::bind_reuseport(tcp.bind.0, n, tcp.backlog, tcp.defer_accept_secs)?;
    let mqtt_addr = listeners[0]
        .local_addr()
        .map_or_else(|_| config.listeners.tcp.bind.to_string(), |a| a.to_string());
    crate::xdp::start_for(&metrics, &config, &listeners);
    let extras = crate::listeners::bind_all(&config, n)?;
    let acceptors: Vec<_> = extras
        .iter()
        .map(|e| (e.kind, e.acceptor.clone()))
        .collect();
    let mut listener_info = vec![ListenerInfo {
        kind: "tcp",
        bind: mqtt_addr.clone(),
    }];
    listener_info.extend(extras.iter().map(|e| ListenerInfo {
        kind: e.kind,
        bind: e.addr.clone(),
    }));
    // Socket i of every optional listener goes to I/O thread i.
    let mut per_thread: Vec<Vec<ExtraSocket>> = (0..n).map(|_| Vec::new()).collect();
    for e in extras {
        for (i, sock) in e.sockets.into_iter().enumerate() {
            per_thread[i].push((e.acceptor.clone(), sock));
        }
    }
    // The admin server is an aid, not the service: if its port is taken (e.g. by another
    // broker on the same host) MQTT still starts, with an error in the log.
    let admin_listener = match io::bind_plain(config.admin.bind.0) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(error = %e, "admin HTTP server disabled");
            None
        }
    };
    let admin_addr = admin_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "disabled".to_string(), |a| a.to_string());
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| flume::bounded(config.limits.inbox_capacity))
        .unzip();
    let broker = Arc::new(Broker::new(
        config.clone(),
        Arc::new(session_config(&config)),
        metrics.clone(),
        security.clone(),
        txs,
        durable,
    ));
    if let Some(stats) = broker.durable.stats_handle() {
        let _ = metrics.store.set(stats);
    }
    // Before the restored subscriptions enter the trie, so they are routed too.
    crate::cluster::start(&broker)?;
    let (mut per_thread_restored, orphan_wills) = restore_into(&broker, restored, n);
    let mut threads = Vec::with_capacity(n + 1);
    let mut backend = "epoll";
    let mut orphan_wills = Some(orphan_wills);
    for (i, ((listener, rx), extra)) in listeners.into_iter().zip(rxs).zip(per_thread).enumerate() {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let broker = broker.clone();
        let restored = Restored {
            sessions: std::mem::take(&mut per_thread_restored[i]),
            // Thread 0 publishes the wills whose sessions did not survive the downtime.
            wills: if i == 0 {
                orphan_wills.take().unwrap_or_default()
            } else {
                Vec::new()
            },
        };
        let handle = std::thread::Builder::new()
            .name(format!("halyard-io-{i}"))
            .spawn(move || io_thread(i, broker, (listener, extra), rx, ready_tx, restored))
            .map_err(|e| StartError::Thread(i, e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(name)) => backend = name,
            Ok(Err(e)) => return Err(StartError::Thread(i, e)),
            Err(_) => return Err(StartError::Thread(i, "exited".into())),
        }
        threads.push(handle);
    }
    let _ = metrics.backend.set(backend);
    if config.io.backend == Backend::Auto && backend == "epoll" {
        let why = io::probe_io_uring().err().map_or_else(
            || "the kernel lacks io_uring operations compio needs".to_string(),
            |e| e.to_string(),
        );
        tracing::warn!(reason = %why, "io_uring unavailable, using epoll");
    }
    let admin = Arc::new(Admin {
        info: NodeInfo {
            version: env!("CARGO_PKG_VERSION"),
            name: config.node_name(),
            role: config.node.role.to_string(),
            listeners: listener_info,
            io_threads: n,
            io_backend_configured: config.io.backend.to_string(),
        },
        metrics,
        max_request_bytes: config.admin.max_request_bytes,
        request_timeout: Duration::from_secs(config.admin.request_timeout_secs),
        token: config.admin.token.clone(),
        security,
    });
    if let Some(listener) = admin_listener {
        std::thread::Builder::new()
            .name("halyard-admin".into())
            .spawn(move || admin_thread(listener, admin))
            .map_err(|e| StartError::Thread(n, e.to_string()))?;
    }
    tracing::info!(
        mqtt = %mqtt_addr,
        admin = %admin_addr,
        backend,
        threads = n,
        "halyard listening"
    );
    Ok(Running {
        broker,
        threads,
        acceptors,
    })
}

fn admin_thread(listener: std::net::TcpListener, admin: Arc<Admin>) {
    let rt = match io::build_runtime(Backend::Epoll, 64) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "admin server failed to start");
            return;
        }
    };
    rt.block_on(async move {
        match compio::net::TcpListener::from_std(listener) {
            Ok(l) => crate::admin::serve(l, admin).await,
            Err(e) => tracing::error!(error = %e, "admin listener failed"),
        }
    });
}

/// A session read back from the store, for the thread that keeps it offline.
struct RestoredOffline {
    key: crate::engine::SessionKey,
    moving: Box<Moving>,
    expires_at: Option<Instant>,
    will: Option<(Will, Instant)>,
}

/// What one I/O thread takes over from the store at start.
#[derive(Default)]
struct Restored {
    sessions: Vec<RestoredOffline>,
    /// Wills whose sessions ended during the downtime: published at once.
    wills: Vec<(ClientId, Will)>,
}

/// Puts the store's state into the broker before any connection: retained messages into
/// the index, sessions into the registry and their subscriptions into the trie (spread
/// over the `n` threads), pending wills with their sessions. Returns each thread's
/// sessions and the wills left without a session.
fn restore_into(
    broker: &Broker,
    restored: RestoredState,
    n: usize,
) -> (Vec<Vec<RestoredOffline>>, Vec<(ClientId, Will)>) {
    // In a cluster the replicated state holds the retained messages (mirrored into the
    // index already); the store's copies are not authoritative there.
    let stored_retained = match broker.cluster.get() {
        Some(_) => Vec::new(),
        None => restored.retained,
    };
    for m in stored_retained {
        if let Err(e) = broker.retained.set(&m.topic, m.clone()) {
            tracing::warn!(topic = %m.topic, error = %e, "stored retained message not restored");
        }
    }
    let retained = i64::try_from(broker.retained.len()).unwrap_or(i64::MAX);
    broker
        .metrics
        .retained
        .store(retained, std::sync::atomic::Ordering::Relaxed);
    let mut wills: std::collections::HashMap<ClientId, (Will, Instant)> = restored
        .wills
        .into_iter()
        .map(|w| (w.client_id, (w.will, w.fire_at)))
        .collect();
    let mut per_thread: Vec<Vec<RestoredOffline>> = (0..n).map(|_| Vec::new()).collect();
    for (i, r) in restored.sessions.into_iter().enumerate() {
        let thread = i % n.max(1);
        let client_id = r.session.client_id().clone();
        let Some((key, route)) = broker.register_restored(&client_id, thread) else {
            continue;
        };
        broker.restore_subscriptions(key, &route, &client_id, &r.session);
        per_thread[thread].push(RestoredOffline {
            key,
            will: wills.remove(&client_id),
            expires_at: r.expires_at,
            moving: Box::new(Moving {
                session: r.session,
                ledger: r.ledger,
                protocol_version: r.protocol_version,
            }),
        });
    }
    broker.update_subscription_gauge();
    let orphans = wills.into_iter().map(|(c, (w, _))| (c, w)).collect();
    (per_thread, orphans)
}

/// One thread's socket of an optional listener, with the listener's acceptor.
type ExtraSocket = (Arc<ArcSwap<Acceptor>>, std::net::TcpListener);

fn io_thread(
    index: usize,
    broker: Arc<Broker>,
    (listener, extra): (std::net::TcpListener, Vec<ExtraSocket>),
    inbox: flume::Receiver<ThreadMsg>,
    ready: std::sync::mpsc::Sender<Result<&'static str, String>>,
    restored: Restored,
) {
    let cfg = &broker.config.io;
    let rt = match io::build_runtime(cfg.backend, cfg.uring_entries) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let name = io::driver_name(rt.driver_type());
    // On epoll the thread's working sockets are watched in its own epoll set
    // (`conn::park::watch`): the loop reads that set directly between turns of compio's
    // driver (`io::block_on`). io_uring keeps compio's loop.
    let epoll = !rt.driver_type().is_iouring();
    // Weak: the context still ends with the thread's future, inside the runtime.
    let direct: Rc<OnceCell<Weak<ThreadCtx>>> = Rc::default();
    let thread_ctx = direct.clone();
    let thread = async move {
        let uring = !epoll;
        let listener = match io::Listener::new(listener, uring) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let mut extra_listeners = Vec::with_capacity(extra.len());
        for (acceptor, sock) in extra {
            match io::Listener::new(sock, uring) {
                Ok(l) => extra_listeners.push((acceptor, l)),
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(name));
        let ctx = ThreadCtx::new(index, broker);
        let _ = thread_ctx.set(Rc::downgrade(&ctx));
        for r in restored.sessions {
            ctx.park(r.key, r.moving, r.expires_at, r.will);
        }
        for (client_id, will) in restored.wills {
            ctx.publish_will(&client_id, &will, true);
        }
        if index == 0 && ctx.broker.durable.is_enabled() {
            let broker = ctx.broker.clone();
            compio::runtime::spawn(async move {
                loop {
                    compio::time::sleep(crate::durable::HEARTBEAT).await;
                    if let Err(e) = broker.durable.heartbeat().await {
                        tracing::debug!(error = %e, "store heartbeat failed");
                    }
                }
            })
            .detach();
        }
        compio::runtime::spawn(ctx.clone().run_inbox(inbox)).detach();
        compio::runtime::spawn(ctx.clone().run_timers()).detach();
        for (acceptor, l) in extra_listeners {
            let ctx = ctx.clone();
            compio::runtime::spawn(async move { accept_loop(&ctx, &l, Some(acceptor)).await })
                .detach();
        }
        // The accept loop runs as a task of its own: `block_on` polls its future after every
        // turn of the driver, woken or not, so this future only checks the task's state
        // (polling the accept and the shutdown wait there cost ~1.5 % of the broker's CPU in a
        // stream of single messages, RESULTS.md session 7). A panic in it panics the thread,
        // as it would inline.
        let accepting = {
            let ctx = ctx.clone();
            compio::runtime::spawn(async move { accept_loop(&ctx, &listener, None).await })
        };
        let _ = accepting.await.resume_unwind();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while ctx.conn_count() > 0 && Instant::now() < deadline {
            compio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if epoll {
        io::block_on(rt, thread, || {
            (direct.get().and_then(Weak::upgrade)).is_some_and(|ctx| ctx.parking.poll_direct(&ctx))
        });
    } else {
        rt.block_on(thread);
    }
}

/// Accepts the connections of one listener until the thread shuts down: what the accept
/// queue holds is taken at once ([`io::Listener::try_accept`], at most [`io::ACCEPT_BURST`]
/// in a row before the thread's other tasks get a turn), and readiness is awaited only when
/// it is empty.
async fn accept_loop(
    ctx: &Rc<ThreadCtx>,
    listener: &io::Listener,
    acceptor: Option<Arc<ArcSwap<Acceptor>>>,
) {
    let mut failures = io::AcceptFailures::new("mqtt");
    loop {
        if ctx.shutting_down.get() {
            return;
        }
        let mut burst = 0;
        while burst < io::ACCEPT_BURST {
            match listener.try_accept() {
                Ok(Some((stream, peer))) => {
                    burst += 1;
                    admit(ctx, stream, peer, acceptor.as_ref());
                }
                Ok(None) => break,
                Err(e) => {
                    if failures.record(&e, Instant::now()) {
                        ctx.stats().hit_limit(Limit::OpenFiles);
                    }
                    // The connection stays queued in the kernel: try again shortly (a
                    // descriptor may be free by then), without spinning.
                    compio::time::sleep(ACCEPT_RETRY).await;
                    break;
                }
            }
        }
        if burst == io::ACCEPT_BURST {
            // More may be queued: let the connections just accepted run first.
            crate::conn::YieldOnce(false).await;
            continue;
        }
        let ready = std::pin::pin!(listener.readable());
        let stop = std::pin::pin!(ctx.shutdown_started());
        if let Either::Right(_) = select(ready, stop).await {
            return;
        }
    }
}

/// How long an accept loop waits after a failed accept (e.g. no descriptor free) before it
/// tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Starts serving one accepted socket, or refuses it (connection limits, per-source limits,
/// a transport layer that cannot start).
fn admit(
    ctx: &Rc<ThreadCtx>,
    stream: compio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: Option<&Arc<ArcSwap<Acceptor>>>,
) {
    let max = ctx.broker.config.limits.max_connections;
    crate::xdp::count_accept(&ctx.broker.metrics, peer.ip());
    if ctx.broker.metrics.connections() >= i64::try_from(max).unwrap_or(i64::MAX) {
        ctx.stats().hit_limit(Limit::MaxConnections);
        crate::xdp::count_refused(&ctx.broker.metrics, peer.ip());
        return;
    }
    // Per-source connection count and connect rate (counted by the guard).
    let slot = match SourceSlot::open(&ctx.broker.security, peer.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::debug!(%peer, ?refusal, "connection refused at accept");
            crate::xdp::count_refused(&ctx.broker.metrics, peer.ip());
            return;
        }
    };
    let transport = match acceptor.map(|a| a.load().accept()) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            tracing::warn!(%peer, error = %e, "transport layer refused at accept");
            crate::xdp::count_refused(&ctx.broker.metrics, peer.ip());
            ctx.broker
                .metrics
                .transport
                .accept_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
    };
    // TCP_NODELAY is inherited from the listener (`io::bind_reuseport`).
    compio::runtime::spawn(crate::conn::serve(
        ctx.clone(),
        stream,
        Some(slot),
        transport,
    ))
    .detach();
}
