//! One enum over the listener kinds, so the server holds a single type per connection.

use bytes::BytesMut;

use crate::{
    Layer, PeerIdentity, Stacked, TlsAcceptor, TlsLayer, TransportError, TransportStats, WsConfig,
    WsLayer,
};

/// What a listener wraps its connections in. Cheap to clone; keep one per listener (per I/O
/// thread) and call [`accept`](Acceptor::accept) for each accepted socket. Plain TCP needs
/// no acceptor (no layer, no copy).
#[derive(Debug, Clone)]
pub enum Acceptor {
    /// `[listeners.tls]`: MQTT over TLS.
    Tls(TlsAcceptor),
    /// `[listeners.ws]`: MQTT over WebSocket.
    Ws(WsConfig),
    /// `[listeners.wss]`: MQTT over WebSocket over TLS.
    Wss(TlsAcceptor, WsConfig),
}

impl Acceptor {
    /// The layer stack for one new connection.
    pub fn accept(&self) -> Result<Transport, TransportError> {
        Ok(match self {
            Acceptor::Tls(tls) => Transport::Tls(Box::new(tls.accept()?)),
            Acceptor::Ws(ws) => Transport::Ws(Box::new(WsLayer::new(ws.clone()))),
            Acceptor::Wss(tls, ws) => Transport::Wss(Box::new(Stacked::new(
                tls.accept()?,
                WsLayer::new(ws.clone()),
            ))),
        })
    }

    /// Reloads the TLS files (SIGHUP); a WebSocket-only acceptor is returned unchanged.
    /// On error the caller keeps using `self`.
    pub fn reload(&self) -> Result<Acceptor, TransportError> {
        Ok(match self {
            Acceptor::Tls(tls) => Acceptor::Tls(tls.reload()?),
            Acceptor::Ws(ws) => Acceptor::Ws(ws.clone()),
            Acceptor::Wss(tls, ws) => Acceptor::Wss(tls.reload()?, ws.clone()),
        })
    }

    /// The listener kind as used in config sections and metric labels: `tls`, `ws`, `wss`.
    pub fn kind(&self) -> &'static str {
        match self {
            Acceptor::Tls(_) => "tls",
            Acceptor::Ws(_) => "ws",
            Acceptor::Wss(..) => "wss",
        }
    }
}

/// The layers of one connection (see [`Acceptor::accept`]). Boxed, so an
/// `Option<Transport>` costs a plain-TCP connection two words.
#[derive(Debug)]
pub enum Transport {
    /// TLS.
    Tls(Box<TlsLayer>),
    /// WebSocket.
    Ws(Box<WsLayer>),
    /// WebSocket over TLS.
    Wss(Box<Stacked<TlsLayer, WsLayer>>),
}

impl Transport {
    fn layer(&mut self) -> &mut dyn Layer {
        match self {
            Transport::Tls(l) => &mut **l,
            Transport::Ws(l) => &mut **l,
            Transport::Wss(l) => &mut **l,
        }
    }

    fn layer_ref(&self) -> &dyn Layer {
        match self {
            Transport::Tls(l) => &**l,
            Transport::Ws(l) => &**l,
            Transport::Wss(l) => &**l,
        }
    }
}

impl Layer for Transport {
    fn receive(&mut self, wire: &[u8], plaintext_out: &mut BytesMut) -> Result<(), TransportError> {
        self.layer().receive(wire, plaintext_out)
    }

    fn send(&mut self, plaintext: &[u8], wire_out: &mut BytesMut) -> Result<(), TransportError> {
        self.layer().send(plaintext, wire_out)
    }

    fn close(&mut self) {
        self.layer().close();
    }

    fn wants_close(&self) -> bool {
        self.layer_ref().wants_close()
    }

    fn is_handshaking(&self) -> bool {
        self.layer_ref().is_handshaking()
    }

    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.layer_ref().peer_identity()
    }

    fn take_stats(&mut self) -> TransportStats {
        self.layer().take_stats()
    }
}
