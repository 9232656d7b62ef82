//! TLS 1.2/1.3 through rustls' sans-IO `ServerConnection`, with optional client-certificate
//! verification (mTLS) and the client certificate's names as [`PeerIdentity`].

mod identity;
mod load;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use rustls::ServerConnection;
use serde::{Deserialize, Serialize};

pub use identity::PeerIdentity;

use crate::{Layer, Limit, TransportError, TransportStats};

/// TLS material of one listener (`[listeners.tls]` / `[listeners.wss]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// PEM file with the CA certificates that client certificates must chain to. Set: every
    /// client must present a valid certificate (mTLS). Unset: no client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Use the client certificate's name (see [`PeerIdentity::username`]) as the MQTT
    /// username, replacing the one in CONNECT. Only meaningful with `ca`. Default false.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// Bounds of one TLS connection's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsLimits {
    /// Plaintext that may wait inside rustls until it can be encrypted (before the handshake
    /// completes), and TLS records that may wait unsent, in bytes. Default 64 KiB (rustls'
    /// own default). Hitting it ends the connection ([`Limit::TlsPendingPlaintext`]).
    pub max_pending_plaintext_bytes: usize,
    /// TLS 1.2 session-cache entries kept by one acceptor for resumption. Default 256.
    pub session_cache_entries: usize,
}

impl Default for TlsLimits {
    fn default() -> Self {
        TlsLimits {
            max_pending_plaintext_bytes: 64 * 1024,
            session_cache_entries: 256,
        }
    }
}

/// A loaded TLS server configuration. Cheap to clone (shared `Arc`s); a listener keeps one
/// and calls [`accept`](TlsAcceptor::accept) per connection.
///
/// Reload (SIGHUP): `let fresh = acceptor.reload()?;` then swap the listener's acceptor for
/// `fresh`. Connections accepted earlier keep the configuration they started with; on error
/// keep the old acceptor and log the error.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
    settings: Arc<TlsSettings>,
    limits: TlsLimits,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("settings", &self.settings)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Reads and checks the certificate chain, the key (it must match the chain's first
    /// certificate) and the optional CA bundle, with default [`TlsLimits`].
    pub fn load(settings: &TlsSettings) -> Result<TlsAcceptor, TransportError> {
        Self::load_with_limits(settings, TlsLimits::default())
    }

    /// [`load`](TlsAcceptor::load) with explicit limits.
    pub fn load_with_limits(
        settings: &TlsSettings,
        limits: TlsLimits,
    ) -> Result<TlsAcceptor, TransportError> {
        let config = load::server_config(settings, &limits)?;
        Ok(TlsAcceptor {
            config: Arc::new(config),
            settings: Arc::new(settings.clone()),
            limits,
        })
    }

    /// Loads the same files again (after they were replaced on disk).
    pub fn reload(&self) -> Result<TlsAcceptor, TransportError> {
        Self::load_with_limits(&self.settings, self.limits)
    }

    /// The settings this acceptor was loaded from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// True when client certificates are required and verified (a `ca` is configured).
    pub fn requires_client_cert(&self) -> bool {
        self.settings.ca.is_some()
    }

    /// A fresh server-side TLS layer for one accepted connection.
    pub fn accept(&self) -> Result<TlsLayer, TransportError> {
        let mut conn =
            ServerConnection::new(self.config.clone()).map_err(TransportError::Config)?;
        conn.set_buffer_limit(Some(self.limits.max_pending_plaintext_bytes));
        Ok(TlsLayer {
            conn,
            limit: self.limits.max_pending_plaintext_bytes,
            use_identity_as_username: self.settings.use_identity_as_username,
            identity: None,
            handshake_done: false,
            failed: false,
            peer_closed: false,
            closing: false,
            stats: TransportStats::default(),
        })
    }
}

/// The server side of one TLS connection (see [`Layer`]).
pub struct TlsLayer {
    conn: ServerConnection,
    limit: usize,
    use_identity_as_username: bool,
    identity: Option<PeerIdentity>,
    handshake_done: bool,
    failed: bool,
    peer_closed: bool,
    closing: bool,
    stats: TransportStats,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("identity", &self.identity)
            .field("failed", &self.failed)
            .field("peer_closed", &self.peer_closed)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl TlsLayer {
    /// The negotiated protocol version, once known.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The SNI host name the client asked for, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.conn.server_name()
    }

    fn fail(&mut self, error: rustls::Error) -> TransportError {
        self.failed = true;
        if self.handshake_done {
            self.stats.tls_errors += 1;
        } else {
            self.stats.tls_handshake_failures += 1;
        }
        TransportError::Tls(error)
    }

    /// Moves every queued TLS record into `wire_out`.
    fn flush(&mut self, wire_out: &mut BytesMut) {
        let mut w = wire_out.writer();
        while self.conn.wants_write() {
            // Writing into a BytesMut cannot fail and always makes progress.
            match self.conn.write_tls(&mut w) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn on_handshake_done(&mut self) {
        self.handshake_done = true;
        self.stats.tls_handshakes += 1;
        if let Some(leaf) = self.conn.peer_certificates().and_then(|c| c.first()) {
            self.identity = Some(PeerIdentity::from_der(
                leaf.as_ref(),
                self.use_identity_as_username,
            ));
        }
    }
}

impl Layer for TlsLayer {
    fn receive(
        &mut self,
        mut wire: &[u8],
        plaintext_out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if self.failed {
            return Err(TransportError::Closed);
        }
        while !wire.is_empty() && !self.peer_closed {
            // rustls takes what fits its deframer buffer (at most one maximal record plus a
            // header); the loop hands it the rest after processing.
            match self.conn.read_tls(&mut wire) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(self.fail(rustls::Error::General(e.to_string()))),
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => return Err(self.fail(e)),
            };
            if !self.handshake_done && !self.conn.is_handshaking() {
                self.on_handshake_done();
            }
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plaintext_out.len();
                plaintext_out.resize(start + n, 0);
                // rustls said exactly `n` bytes are buffered.
                if self
                    .conn
                    .reader()
                    .read_exact(&mut plaintext_out[start..])
                    .is_err()
                {
                    plaintext_out.truncate(start);
                }
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
        }
        Ok(())
    }

    fn send(
        &mut self,
        mut plaintext: &[u8],
        wire_out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if !plaintext.is_empty() && (self.failed || self.closing) {
            self.flush(wire_out);
            return Err(TransportError::Closed);
        }
        while !plaintext.is_empty() {
            let n = match self.conn.writer().write(plaintext) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(rustls::Error::General(e.to_string()))),
            };
            plaintext = &plaintext[n..];
            self.flush(wire_out);
            if n == 0 {
                // Still handshaking and the pending-plaintext buffer is full.
                self.stats.hit(Limit::TlsPendingPlaintext);
                self.failed = true;
                return Err(TransportError::Limit {
                    limit: Limit::TlsPendingPlaintext,
                    value: self.limit,
                });
            }
        }
        self.flush(wire_out);
        Ok(())
    }

    fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
    }

    fn wants_close(&self) -> bool {
        self.failed || self.peer_closed || self.closing
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    fn take_stats(&mut self) -> TransportStats {
        std::mem::take(&mut self.stats)
    }
}
