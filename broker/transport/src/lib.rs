//! halyard-transport: sans-IO byte-stream layers that sit between a socket and the MQTT
//! session state machine: TLS (rustls) and WebSocket framing (RFC 6455 via tungstenite),
//! stackable as WebSocket over TLS (`wss`).
//!
//! It owns: loading TLS material ([`TlsAcceptor::load`], with errors that name the file),
//! client-certificate identities ([`PeerIdentity`]), the WebSocket upgrade handshake with the
//! `mqtt` subprotocol, framing, ping/pong and close, and a named limit with a counter on every
//! buffer it keeps ([`TlsLimits`], [`WsConfig`], [`TransportStats`]).
//!
//! It must never: touch a socket, a thread, the clock or a global (bytes in, bytes out; the
//! server moves them), panic on network input, or understand MQTT (it carries opaque bytes).
//!
//! # Using a layer
//! On every read from the socket: [`Layer::receive`] with the bytes read, then hand the
//! plaintext it appended to the MQTT session. Whenever the session has output, and after every
//! `receive` (handshakes, pongs and close replies are produced while receiving):
//! [`Layer::send`] with the session's bytes (possibly empty) and write the wire bytes it
//! appended. When [`Layer::wants_close`] turns true, flush once more and close the socket.

mod error;
mod kind;
mod stats;
pub mod tls;
pub mod ws;

use bytes::BytesMut;

pub use error::TransportError;
pub use kind::{Acceptor, Transport};
pub use stats::{Limit, TransportStats};
pub use tls::{PeerIdentity, TlsAcceptor, TlsLayer, TlsLimits, TlsSettings};
pub use ws::{WsConfig, WsLayer};

/// A sans-IO byte-stream layer: wire bytes on one side, plaintext (MQTT bytes) on the other.
///
/// Buffers inside a layer are bounded by its configuration; output is appended to caller
/// buffers, whose size the caller bounds (one read's worth in, one write's worth out).
pub trait Layer {
    /// Feeds bytes received from the socket and appends the plaintext they complete to
    /// `plaintext_out`. May queue wire bytes (handshake messages, pongs, close replies):
    /// call [`send`](Layer::send) afterwards to collect them.
    ///
    /// On error the connection is finished: flush with `send(&[], ..)` and close.
    fn receive(&mut self, wire: &[u8], plaintext_out: &mut BytesMut) -> Result<(), TransportError>;

    /// Queues `plaintext` (may be empty) and appends every wire byte ready to go, including
    /// bytes queued by [`receive`](Layer::receive) or [`close`](Layer::close), to `wire_out`.
    ///
    /// After the layer failed or closed, non-empty plaintext gives
    /// [`TransportError::Closed`], while empty plaintext still flushes the final bytes.
    fn send(&mut self, plaintext: &[u8], wire_out: &mut BytesMut) -> Result<(), TransportError>;

    /// Starts a graceful close (TLS `close_notify`, WebSocket close frame 1000); the bytes
    /// come out of the next [`send`](Layer::send). Idempotent.
    fn close(&mut self);

    /// True once the connection should end: the peer closed (TLS `close_notify`, WebSocket
    /// close), an error occurred, or [`close`](Layer::close) was called. The server then
    /// flushes with `send(&[], ..)`, treats the stream as closed by the peer and closes the
    /// socket.
    fn wants_close(&self) -> bool;

    /// True until the layer's handshake completed (no plaintext flows before).
    fn is_handshaking(&self) -> bool;

    /// The verified client-certificate identity (mTLS), once the handshake completed.
    fn peer_identity(&self) -> Option<&PeerIdentity>;

    /// The counters since the previous call (then reset to zero).
    fn take_stats(&mut self) -> TransportStats;
}

/// Largest scratch capacity a [`Stacked`] layer keeps between calls.
const KEEP_SCRATCH_CAPACITY: usize = 64 * 1024;

/// `inner` running over `outer`, e.g. WebSocket over TLS: wire bytes go through `outer`
/// first, and the plaintext `outer` yields is `inner`'s wire.
#[derive(Debug)]
pub struct Stacked<O, I> {
    outer: O,
    inner: I,
    /// Bytes between the two layers during one call (empty between calls).
    scratch: BytesMut,
}

impl<O: Layer, I: Layer> Stacked<O, I> {
    /// Stacks `inner` over `outer`.
    pub fn new(outer: O, inner: I) -> Self {
        Stacked {
            outer,
            inner,
            scratch: BytesMut::new(),
        }
    }

    /// The layer next to the socket.
    pub fn outer(&self) -> &O {
        &self.outer
    }

    /// The layer next to the session.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    fn reset_scratch(&mut self) {
        self.scratch.clear();
        if self.scratch.capacity() > KEEP_SCRATCH_CAPACITY {
            self.scratch = BytesMut::new();
        }
    }
}

impl<O: Layer, I: Layer> Layer for Stacked<O, I> {
    fn receive(&mut self, wire: &[u8], plaintext_out: &mut BytesMut) -> Result<(), TransportError> {
        self.scratch.clear();
        let result = self
            .outer
            .receive(wire, &mut self.scratch)
            .and_then(|()| self.inner.receive(&self.scratch, plaintext_out));
        self.reset_scratch();
        result
    }

    fn send(&mut self, plaintext: &[u8], wire_out: &mut BytesMut) -> Result<(), TransportError> {
        self.scratch.clear();
        // The inner layer's final bytes (e.g. a close frame after an error) still go out.
        let inner = self.inner.send(plaintext, &mut self.scratch);
        let mut outer = self.outer.send(&self.scratch, wire_out);
        if self.inner.wants_close() && !self.outer.wants_close() {
            // The inner layer is done and its last bytes are queued: close the outer one
            // behind them (e.g. TLS close_notify after the WebSocket close frame).
            self.outer.close();
            outer = outer.and(self.outer.send(&[], wire_out));
        }
        self.reset_scratch();
        inner.and(outer)
    }

    /// Closes the inner layer; the outer one closes behind the inner one's last bytes in the
    /// next [`send`](Layer::send).
    fn close(&mut self) {
        self.inner.close();
    }

    fn wants_close(&self) -> bool {
        self.outer.wants_close() || self.inner.wants_close()
    }

    fn is_handshaking(&self) -> bool {
        self.outer.is_handshaking() || self.inner.is_handshaking()
    }

    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.outer
            .peer_identity()
            .or_else(|| self.inner.peer_identity())
    }

    fn take_stats(&mut self) -> TransportStats {
        let mut s = self.outer.take_stats();
        s.add(&self.inner.take_stats());
        s
    }
}
