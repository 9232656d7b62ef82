//! MQTT over WebSocket (RFC 6455; MQTT 5.0 section 6): the HTTP upgrade with the `mqtt`
//! subprotocol, then binary frames whose payloads are a byte stream (a frame may carry part
//! of an MQTT packet or several). Framing, masking, fragmentation, ping/pong and the close
//! handshake are tungstenite's `WebSocketContext`, driven over an in-memory stream.

mod handshake;

use std::io;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};

use handshake::Parsed;
pub use handshake::SUBPROTOCOLS;

use crate::{Layer, Limit, PeerIdentity, TransportError, TransportStats};

/// Limits and options of a WebSocket listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Largest HTTP upgrade request head, in bytes. Default 8 KiB. Larger: refused with 431
    /// ([`Limit::WsHandshakeBytes`]).
    pub max_handshake_bytes: usize,
    /// Most headers in the upgrade request. Default 32. More: refused with 431
    /// ([`Limit::WsHandshakeHeaders`]).
    pub max_handshake_headers: usize,
    /// Largest incoming frame payload, in bytes; the whole payload is buffered before it is
    /// passed on. Default 1 MiB + 64 KiB: set it at least to `mqtt.max_packet_size` plus a
    /// little, since clients usually send one packet per frame. Larger: close 1009
    /// ([`Limit::WsMessageSize`]).
    pub max_frame_bytes: usize,
    /// Largest incoming message (a fragmented message is reassembled before it is passed
    /// on), in bytes. Default 1 MiB + 64 KiB. Larger: close 1009 ([`Limit::WsMessageSize`]).
    pub max_message_bytes: usize,
    /// Initial read buffer of the frame decoder, allocated per connection. Default 4 KiB.
    pub read_buffer_bytes: usize,
    /// Accept an upgrade request that offers no subprotocol at all (answered without a
    /// `Sec-WebSocket-Protocol` header). Default false: such requests are refused, since MQTT
    /// requires clients to offer `mqtt` [MQTT-6.0.0-3].
    pub allow_missing_subprotocol: bool,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_handshake_bytes: 8 * 1024,
            max_handshake_headers: 32,
            max_frame_bytes: (1 << 20) + (64 << 10),
            max_message_bytes: (1 << 20) + (64 << 10),
            read_buffer_bytes: 4 * 1024,
            allow_missing_subprotocol: false,
        }
    }
}

impl WsConfig {
    fn tungstenite(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            // Writes go straight into the caller's buffer: nothing waits inside tungstenite.
            .write_buffer_size(0)
            .max_frame_size(Some(self.max_frame_bytes))
            .max_message_size(Some(self.max_message_bytes))
    }
}

/// The in-memory stream tungstenite reads from and writes to during one call: reads take
/// from `input` and report `WouldBlock` when it is used up; writes append to `output`.
struct Pipe<'a> {
    input: &'a [u8],
    output: &'a mut BytesMut,
}

impl io::Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl io::Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    /// Collecting the upgrade request head (bounded by `max_handshake_bytes`).
    Handshake(BytesMut),
    Open(Box<WebSocketContext>),
    /// Closed or failed: only queued bytes remain to be sent.
    Done,
}

/// The server side of one WebSocket connection (see [`Layer`]).
pub struct WsLayer {
    config: WsConfig,
    state: State,
    /// Wire bytes produced while receiving or closing (handshake answer, pongs, close
    /// frames); small: tungstenite keeps at most one pending control frame.
    pending: BytesMut,
    protocol: Option<&'static str>,
    closing: bool,
    stats: TransportStats,
}

impl std::fmt::Debug for WsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Handshake(_) => "handshake",
            State::Open(_) => "open",
            State::Done => "done",
        };
        f.debug_struct("WsLayer")
            .field("state", &state)
            .field("protocol", &self.protocol)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl WsLayer {
    /// A layer for one accepted connection, expecting the HTTP upgrade request first.
    pub fn new(config: WsConfig) -> WsLayer {
        WsLayer {
            config,
            state: State::Handshake(BytesMut::new()),
            pending: BytesMut::new(),
            protocol: None,
            closing: false,
            stats: TransportStats::default(),
        }
    }

    /// The subprotocol agreed in the handshake (`mqtt` or `mqttv3.1`).
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.protocol
    }

    fn refuse(&mut self, status: u16, reason: &'static str) -> TransportError {
        let refusal = handshake::Refusal { status, reason };
        self.pending
            .extend_from_slice(refusal.response().as_bytes());
        self.state = State::Done;
        self.stats.ws_handshake_refused += 1;
        TransportError::WsHandshake(reason)
    }

    /// Handles handshake bytes; returns the frame bytes that followed the head, if accepted.
    fn handshake(&mut self, wire: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
        let State::Handshake(buf) = &mut self.state else {
            return Ok(None);
        };
        let room = self.config.max_handshake_bytes.saturating_sub(buf.len());
        let take = wire.len().min(room);
        buf.extend_from_slice(&wire[..take]);
        match handshake::parse(buf, &self.config) {
            Parsed::Partial
                if take < wire.len() || buf.len() >= self.config.max_handshake_bytes =>
            {
                self.stats.hit(Limit::WsHandshakeBytes);
                Err(self.refuse(431, "upgrade request too large"))
            }
            Parsed::Partial => Ok(None),
            Parsed::Refuse(r) => {
                if r.status == 431 {
                    self.stats.hit(Limit::WsHandshakeHeaders);
                }
                Err(self.refuse(r.status, r.reason))
            }
            Parsed::Accept(up) => {
                let mut rest = buf.split_off(up.head_len).to_vec();
                rest.extend_from_slice(&wire[take..]);
                self.pending
                    .extend_from_slice(handshake::accept_response(&up).as_bytes());
                self.protocol = up.protocol;
                self.stats.ws_handshakes += 1;
                self.state = State::Open(Box::new(WebSocketContext::new(
                    Role::Server,
                    Some(self.config.tungstenite()),
                )));
                Ok(Some(rest))
            }
        }
    }

    /// Reads every complete message out of `wire`.
    fn frames(&mut self, wire: &[u8], out: &mut BytesMut) -> Result<(), TransportError> {
        let State::Open(ctx) = &mut self.state else {
            return Ok(());
        };
        let mut pipe = Pipe {
            input: wire,
            output: &mut self.pending,
        };
        loop {
            let error = match ctx.read(&mut pipe) {
                Ok(Message::Binary(payload)) => {
                    out.extend_from_slice(&payload);
                    continue;
                }
                Ok(Message::Ping(_)) => {
                    // tungstenite queued the pong; it goes out with the next flush.
                    self.stats.ws_pings += 1;
                    continue;
                }
                Ok(Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => {
                    // The reply is queued; the next read reports the end.
                    self.closing = true;
                    continue;
                }
                Ok(Message::Text(_)) => {
                    self.stats.ws_text_frames += 1;
                    let frame = CloseFrame {
                        code: CloseCode::Unsupported,
                        reason: "MQTT uses binary frames".into(),
                    };
                    let _ = ctx.close(&mut pipe, Some(frame));
                    self.closing = true;
                    return Err(TransportError::WsTextFrame);
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.state = State::Done;
                    self.closing = true;
                    return Ok(());
                }
                Err(e) => e,
            };
            let (code, result) = match error {
                WsError::Capacity(CapacityError::MessageTooLong { max_size, .. }) => {
                    self.stats.hit(Limit::WsMessageSize);
                    let limit = TransportError::Limit {
                        limit: Limit::WsMessageSize,
                        value: max_size,
                    };
                    (CloseCode::Size, limit)
                }
                other => {
                    self.stats.ws_protocol_errors += 1;
                    (
                        CloseCode::Protocol,
                        TransportError::WebSocket(other.to_string()),
                    )
                }
            };
            let frame = CloseFrame {
                code,
                reason: "".into(),
            };
            let _ = ctx.close(&mut pipe, Some(frame));
            self.state = State::Done;
            self.closing = true;
            return Err(result);
        }
    }
}

impl Layer for WsLayer {
    fn receive(&mut self, wire: &[u8], plaintext_out: &mut BytesMut) -> Result<(), TransportError> {
        match self.state {
            State::Done => Ok(()),
            State::Open(_) => self.frames(wire, plaintext_out),
            State::Handshake(_) => match self.handshake(wire)? {
                Some(rest) => self.frames(&rest, plaintext_out),
                None => Ok(()),
            },
        }
    }

    fn send(&mut self, plaintext: &[u8], wire_out: &mut BytesMut) -> Result<(), TransportError> {
        wire_out.extend_from_slice(&self.pending);
        self.pending.clear();
        let ctx = match &mut self.state {
            State::Open(ctx) if !self.closing && ctx.can_write() => ctx,
            _ if plaintext.is_empty() => return Ok(()),
            _ => return Err(TransportError::Closed),
        };
        let mut pipe = Pipe {
            input: &[],
            output: wire_out,
        };
        let mut result = Ok(());
        if !plaintext.is_empty() {
            result = ctx.write(
                &mut pipe,
                Message::Binary(Bytes::copy_from_slice(plaintext)),
            );
        }
        let result = result.and_then(|()| ctx.flush(&mut pipe));
        match result {
            Ok(()) => Ok(()),
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                self.state = State::Done;
                self.closing = true;
                Ok(())
            }
            Err(e) => {
                self.state = State::Done;
                self.closing = true;
                Err(TransportError::WebSocket(e.to_string()))
            }
        }
    }

    fn close(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        if let State::Open(ctx) = &mut self.state {
            let mut pipe = Pipe {
                input: &[],
                output: &mut self.pending,
            };
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = ctx.close(&mut pipe, Some(frame));
        }
    }

    fn wants_close(&self) -> bool {
        self.closing || matches!(self.state, State::Done)
    }

    fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshake(_))
    }

    fn peer_identity(&self) -> Option<&PeerIdentity> {
        None
    }

    fn take_stats(&mut self) -> TransportStats {
        std::mem::take(&mut self.stats)
    }
}
