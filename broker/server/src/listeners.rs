//! The optional listeners (`[listeners.tls]`, `[listeners.ws]`, `[listeners.wss]`): their
//! acceptors from `halyard-transport`, shared by the I/O threads and swapped on SIGHUP, and
//! the transport counters exported on /metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwap;
use halyard_transport::{Acceptor, Limit, TlsAcceptor, TransportStats, WsConfig};

use crate::config::Config;
use crate::io::{self, IoError};

/// Why an optional listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The TLS material could not be loaded (the message names the file).
    #[error("config error: listeners.{kind}: {source}")]
    Tls {
        /// `tls` or `wss`.
        kind: &'static str,
        /// The transport crate's error.
        source: halyard_transport::TransportError,
    },
    /// The sockets could not be bound.
    #[error("listeners.{kind}: {source}")]
    Bind {
        /// The listener kind.
        kind: &'static str,
        /// The bind error.
        source: IoError,
    },
}

/// One optional listener: its acceptor (swapped on SIGHUP) and one socket per I/O thread.
pub struct Extra {
    /// `tls`, `ws` or `wss`.
    pub kind: &'static str,
    /// The bound address (for /status).
    pub addr: String,
    /// The acceptor every thread's accept loop reads.
    pub acceptor: Arc<ArcSwap<Acceptor>>,
    /// One SO_REUSEPORT socket per I/O thread.
    pub sockets: Vec<std::net::TcpListener>,
}

/// Loads the acceptors of every configured optional listener and binds `threads` sockets each.
pub fn bind_all(config: &Config, threads: usize) -> Result<Vec<Extra>, ListenerError> {
    let l = &config.listeners;
    let mut specs = Vec::new();
    if let Some(t) = &l.tls {
        let tls = TlsAcceptor::load(&t.settings()).map_err(|source| ListenerError::Tls {
            kind: "tls",
            source,
        })?;
        specs.push(("tls", t.bind.0, t.backlog, Acceptor::Tls(tls)));
    }
    if let Some(w) = &l.ws {
        specs.push(("ws", w.bind.0, w.backlog, Acceptor::Ws(WsConfig::default())));
    }
    if let Some(t) = &l.wss {
        let tls = TlsAcceptor::load(&t.settings()).map_err(|source| ListenerError::Tls {
            kind: "wss",
            source,
        })?;
        specs.push((
            "wss",
            t.bind.0,
            t.backlog,
            Acceptor::Wss(tls, WsConfig::default()),
        ));
    }
    let mut out = Vec::with_capacity(specs.len());
    for (kind, bind, backlog, acceptor) in specs {
        let sockets = io::bind_reuseport(bind, threads, backlog, 0)
            .map_err(|source| ListenerError::Bind { kind, source })?;
        let addr = sockets[0]
            .local_addr()
            .map_or_else(|_| bind.to_string(), |a| a.to_string());
        out.push(Extra {
            kind,
            addr,
            acceptor: Arc::new(ArcSwap::from_pointee(acceptor)),
            sockets,
        });
    }
    Ok(out)
}

/// Reloads the TLS files of every acceptor (SIGHUP). On error the old acceptor stays in use
/// and the error is logged; existing connections keep their sessions either way.
pub fn reload_all(
    acceptors: &[(&'static str, Arc<ArcSwap<Acceptor>>)],
    counters: &TransportCounters,
) {
    for (kind, swap) in acceptors {
        match swap.load().reload() {
            Ok(fresh) => {
                swap.store(Arc::new(fresh));
                counters.reloads_ok.fetch_add(1, Relaxed);
                tracing::info!(listener = kind, "TLS material reloaded");
            }
            Err(e) => {
                counters.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!(listener = kind, error = %e, "TLS reload failed; keeping the old certificate");
            }
        }
    }
}

/// Node-wide transport counters (`halyard_tls_*`, `halyard_ws_*`).
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes failed.
    pub tls_handshake_failures: AtomicU64,
    /// TLS errors after the handshake.
    pub tls_errors: AtomicU64,
    /// WebSocket upgrades accepted.
    pub ws_handshakes: AtomicU64,
    /// WebSocket upgrades refused.
    pub ws_handshake_refused: AtomicU64,
    /// WebSocket text frames refused.
    pub ws_text_frames: AtomicU64,
    /// WebSocket protocol errors.
    pub ws_protocol_errors: AtomicU64,
    /// WebSocket pings answered.
    pub ws_pings: AtomicU64,
    /// Transport limit hits, indexed like [`Limit::ALL`].
    pub limit_hits: [AtomicU64; Limit::ALL.len()],
    /// Connections whose layer could not be created at accept.
    pub accept_errors: AtomicU64,
    /// Successful TLS reloads.
    pub reloads_ok: AtomicU64,
    /// Failed TLS reloads.
    pub reloads_failed: AtomicU64,
}

impl TransportCounters {
    /// Adds one connection's stats delta.
    pub fn add(&self, s: &TransportStats) {
        if s.is_empty() {
            return;
        }
        self.tls_handshakes.fetch_add(s.tls_handshakes, Relaxed);
        self.tls_handshake_failures
            .fetch_add(s.tls_handshake_failures, Relaxed);
        self.tls_errors.fetch_add(s.tls_errors, Relaxed);
        self.ws_handshakes.fetch_add(s.ws_handshakes, Relaxed);
        self.ws_handshake_refused
            .fetch_add(s.ws_handshake_refused, Relaxed);
        self.ws_text_frames.fetch_add(s.ws_text_frames, Relaxed);
        self.ws_protocol_errors
            .fetch_add(s.ws_protocol_errors, Relaxed);
        self.ws_pings.fetch_add(s.ws_pings, Relaxed);
        for (c, n) in self.limit_hits.iter().zip(s.limit_hits) {
            c.fetch_add(n, Relaxed);
        }
    }

    /// `(metric name, help, value)` of every plain counter.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 9] {
        let g = |c: &AtomicU64| c.load(Relaxed);
        [
            (
                "halyard_tls_handshakes",
                "TLS handshakes completed",
                g(&self.tls_handshakes),
            ),
            (
                "halyard_tls_handshake_failures",
                "TLS handshakes failed (bad client certificate, protocol error)",
                g(&self.tls_handshake_failures),
            ),
            (
                "halyard_tls_errors",
                "TLS errors after the handshake",
                g(&self.tls_errors),
            ),
            (
                "halyard_ws_handshakes",
                "WebSocket upgrades accepted",
                g(&self.ws_handshakes),
            ),
            (
                "halyard_ws_handshakes_refused",
                "WebSocket upgrade requests refused",
                g(&self.ws_handshake_refused),
            ),
            (
                "halyard_ws_text_frames",
                "WebSocket text frames refused",
                g(&self.ws_text_frames),
            ),
            (
                "halyard_ws_protocol_errors",
                "WebSocket protocol errors",
                g(&self.ws_protocol_errors),
            ),
            (
                "halyard_ws_pings",
                "WebSocket pings answered",
                g(&self.ws_pings),
            ),
            (
                "halyard_transport_accept_errors",
                "Connections refused because their TLS/WebSocket layer could not be created",
                g(&self.accept_errors),
            ),
        ]
    }

    /// `(limit label, hits)` per transport limit, for `halyard_limit_hits_total{limit}`.
    pub fn limit_hits(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Limit::ALL
            .iter()
            .zip(&self.limit_hits)
            .map(|(l, c)| (l.as_str(), c.load(Relaxed)))
    }
}
