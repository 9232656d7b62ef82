//! Raw-socket MQTT: packets built by hand from the specification, and a small reader for what
//! the broker sends back. Deliberately independent of `halyard-codec` so that a bug shared by
//! the broker's encoder and decoder cannot hide itself; it also lets tests write packets that
//! a correct codec refuses to produce (bad flags, QoS 3, wrong lengths).

mod decode;
mod encode;
mod props;

pub use decode::{Packet, decode, publish_parts};
pub use encode::{
    Connect, Publish, Will, ack, auth, disconnect, frame, pingreq, put_bin, put_str, put_varint,
    sub_opts, subscribe, unsubscribe,
};
pub use props::{Prop, Props, prop};

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Protocol version of a raw connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Why [`RawClient::recv`] returned no packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    /// The bytes received are not a valid packet.
    Malformed(String),
}

/// A blocking TCP connection speaking hand-built MQTT. Every read is bounded.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Packets set aside by [`RawClient::recv_until`], returned first by later receives.
    pending: std::collections::VecDeque<Packet>,
    /// Version used to decode what the broker sends.
    pub version: Version,
}

impl RawClient {
    /// Opens a TCP connection (no MQTT traffic yet).
    pub fn open(addr: SocketAddr, version: Version) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, crate::WAIT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
            .set_write_timeout(Some(crate::WAIT))
            .expect("set write timeout");
        RawClient {
            stream,
            buf: Vec::new(),
            pending: Default::default(),
            version,
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK's (session present, code,
    /// properties). Panics if anything else arrives.
    pub fn connect(addr: SocketAddr, connect: &Connect) -> (RawClient, bool, u8, Props) {
        let version = if connect.level == 5 {
            Version::V5
        } else {
            Version::V311
        };
        let mut c = RawClient::open(addr, version);
        c.send(&connect.encode());
        match c.recv() {
            Ok(Packet::ConnAck {
                session_present,
                code,
                props,
            }) => (c, session_present, code, props),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with a plain valid CONNECT and asserts success.
    pub fn connected(addr: SocketAddr, version: Version, client_id: &str) -> RawClient {
        let (c, _, code, _) = Self::connect(addr, &Connect::new(version, client_id));
        assert_eq!(code, 0, "CONNACK code for {client_id}");
        c
    }

    /// Writes raw bytes. A write error (the broker already closed) is ignored: the following
    /// read reports the close.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Receives one packet within [`crate::WAIT`].
    pub fn recv(&mut self) -> Result<Packet, RecvError> {
        self.recv_within(crate::WAIT)
    }

    /// Receives one packet within `limit`.
    pub fn recv_within(&mut self, limit: Duration) -> Result<Packet, RecvError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        self.recv_wire(limit)
    }

    fn recv_wire(&mut self, limit: Duration) -> Result<Packet, RecvError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((first, body, used)) = split_frame(&self.buf)? {
                let p = decode(self.version, first, &body).map_err(RecvError::Malformed)?;
                self.buf.drain(..used);
                return Ok(p);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvError::Timeout);
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .expect("set read timeout");
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(RecvError::Timeout);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(RecvError::Closed),
            }
        }
    }

    /// Receives until a packet matches `f`, within [`crate::WAIT`]. Packets that do not match
    /// are set aside and returned, in order, by the following receives.
    pub fn recv_until(&mut self, mut f: impl FnMut(&Packet) -> bool) -> Packet {
        if let Some(i) = self.pending.iter().position(&mut f) {
            return self.pending.remove(i).expect("index from position");
        }
        let deadline = Instant::now() + crate::WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_wire(left) {
                Ok(p) if f(&p) => return p,
                Ok(p) => self.pending.push_back(p),
                Err(e) => panic!("waiting for a packet: {e:?}; set aside: {:?}", self.pending),
            }
        }
    }

    /// Receives the next PUBLISH (answering nothing), skipping PINGRESPs.
    pub fn recv_publish(&mut self) -> Packet {
        self.recv_until(|p| matches!(p, Packet::Publish { .. }))
    }

    /// Waits (bounded by `limit`) until the broker closes the connection; returns the packets
    /// received before the close. Panics if it is still open after `limit`.
    pub fn expect_closed_within(&mut self, limit: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left) {
                Ok(p) => seen.push(p),
                Err(RecvError::Closed) => return seen,
                // Garbage after a close decision still means we must see the close.
                Err(RecvError::Malformed(m)) => {
                    panic!("broker sent malformed bytes: {m}; packets before: {seen:?}")
                }
                Err(RecvError::Timeout) => panic!(
                    "connection still open after {limit:?}; packets received meanwhile: {seen:?}"
                ),
            }
        }
    }

    /// [`Self::expect_closed_within`] with [`crate::WAIT`].
    pub fn expect_closed(&mut self) -> Vec<Packet> {
        self.expect_closed_within(crate::WAIT)
    }

    /// Expects the broker to send DISCONNECT with `reason` (5.0) and close.
    pub fn expect_disconnect(&mut self, reason: u8) {
        let seen = self.expect_closed();
        let got: Vec<u8> = seen
            .iter()
            .filter_map(|p| match p {
                Packet::Disconnect { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![reason],
            "expected exactly one DISCONNECT 0x{reason:02X} before close; got {seen:?}"
        );
    }

    /// Subscribes and returns the SUBACK codes.
    pub fn subscribe(&mut self, pid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
        let v = self.version;
        self.send(&subscribe(v, pid, filters, props));
        match self.recv_until(|p| matches!(p, Packet::SubAck { .. })) {
            Packet::SubAck { pid: got, codes } => {
                assert_eq!(got, pid, "SUBACK packet id [MQTT-3.8.4-2]");
                codes
            }
            _ => unreachable!("recv_until returned a SUBACK"),
        }
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP); returns the
    /// reason code of the PUBACK / PUBREC.
    pub fn publish(&mut self, p: &Publish) -> u8 {
        let v = self.version;
        self.send(&p.encode(v));
        match p.qos {
            1 => match self.recv_until(|x| matches!(x, Packet::Ack { kind: 4, .. })) {
                Packet::Ack { pid, reason, .. } => {
                    assert_eq!(pid, p.pid, "PUBACK packet id");
                    reason
                }
                _ => unreachable!("a PUBACK"),
            },
            2 => {
                let reason = match self.recv_until(|x| matches!(x, Packet::Ack { kind: 5, .. })) {
                    Packet::Ack { pid, reason, .. } => {
                        assert_eq!(pid, p.pid, "PUBREC packet id");
                        reason
                    }
                    _ => unreachable!("a PUBREC"),
                };
                self.send(&ack(0x62, p.pid));
                self.recv_until(|x| matches!(x, Packet::Ack { kind: 7, .. }));
                reason
            }
            _ => 0,
        }
    }

    /// Acknowledges a received QoS 1/2 PUBLISH (PUBACK, or PUBREC then PUBREL/PUBCOMP).
    pub fn ack_publish(&mut self, p: &Packet) {
        if let Packet::Publish { qos, pid, .. } = p {
            match qos {
                1 => self.send(&ack(0x40, *pid)),
                2 => {
                    self.send(&ack(0x50, *pid));
                    self.recv_until(|x| matches!(x, Packet::Ack { kind: 6, .. }));
                    self.send(&ack(0x70, *pid));
                }
                _ => {}
            }
        }
    }

    /// Shuts the socket down without DISCONNECT (an abnormal close for the broker).
    pub fn drop_abruptly(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The underlying stream (e.g. to write a partial packet).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

fn split_frame(buf: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>, RecvError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut len = 0usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return Err(RecvError::Malformed("remaining length over 4 bytes".into()));
        }
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    Ok(Some((buf[0], buf[i..i + len].to_vec(), i + len)))
}
