//! Plain counters kept per connection; the server sums them into its metrics.

use std::fmt;

/// A named limit whose hits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`TlsLimits::max_pending_plaintext_bytes`](crate::TlsLimits): plaintext queued while
    /// TLS cannot yet encrypt it (before the handshake completes).
    TlsPendingPlaintext,
    /// [`WsConfig::max_handshake_bytes`](crate::WsConfig): size of the HTTP upgrade request.
    WsHandshakeBytes,
    /// [`WsConfig::max_handshake_headers`](crate::WsConfig): header count of the upgrade request.
    WsHandshakeHeaders,
    /// [`WsConfig::max_frame_bytes`](crate::WsConfig) or
    /// [`WsConfig::max_message_bytes`](crate::WsConfig): one incoming frame or message.
    WsMessageSize,
}

impl Limit {
    /// Every limit, in the order of [`TransportStats::limit_hits`].
    pub const ALL: [Limit; 4] = [
        Limit::TlsPendingPlaintext,
        Limit::WsHandshakeBytes,
        Limit::WsHandshakeHeaders,
        Limit::WsMessageSize,
    ];

    /// A stable snake_case name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::TlsPendingPlaintext => "tls_pending_plaintext",
            Limit::WsHandshakeBytes => "ws_handshake_bytes",
            Limit::WsHandshakeHeaders => "ws_handshake_headers",
            Limit::WsMessageSize => "ws_message_size",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Events counted by a layer since the last [`Layer::take_stats`](crate::Layer::take_stats).
///
/// All fields are plain counts; a stacked layer reports the sum of its parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed (bad client certificate, protocol error, no common cipher).
    pub tls_handshake_failures: u64,
    /// TLS errors after the handshake (bad records, fatal alerts).
    pub tls_errors: u64,
    /// WebSocket upgrades accepted.
    pub ws_handshakes: u64,
    /// WebSocket upgrade requests refused (malformed, wrong version, no `mqtt` subprotocol).
    pub ws_handshake_refused: u64,
    /// WebSocket text frames refused with close code 1003.
    pub ws_text_frames: u64,
    /// WebSocket protocol errors (bad framing, unmasked client frames, ...).
    pub ws_protocol_errors: u64,
    /// WebSocket pings answered.
    pub ws_pings: u64,
    /// Hits per [`Limit`], indexed by `Limit as usize`.
    pub limit_hits: [u64; Limit::ALL.len()],
}

impl TransportStats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &TransportStats) {
        self.tls_handshakes += other.tls_handshakes;
        self.tls_handshake_failures += other.tls_handshake_failures;
        self.tls_errors += other.tls_errors;
        self.ws_handshakes += other.ws_handshakes;
        self.ws_handshake_refused += other.ws_handshake_refused;
        self.ws_text_frames += other.ws_text_frames;
        self.ws_protocol_errors += other.ws_protocol_errors;
        self.ws_pings += other.ws_pings;
        for (a, b) in self.limit_hits.iter_mut().zip(other.limit_hits) {
            *a += b;
        }
    }

    /// Counts one hit of `limit`.
    pub fn hit(&mut self, limit: Limit) {
        self.limit_hits[limit as usize] += 1;
    }

    /// Hits of `limit`.
    pub fn hits(&self, limit: Limit) -> u64 {
        self.limit_hits[limit as usize]
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == TransportStats::default()
    }
}
