//! Test harness: a scripted client facing one [`Connection`], with virtual time (the idea of
//! quinn-proto's `Pair`): it encodes client packets with the codec, feeds them to the
//! connection, and decodes what the connection transmits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use halyard_codec::{
    Connect, ConnectProperties, MqttString, Packet, ProtocolVersion, PubResponse, Publish,
    PublishProperties, QoS, ReasonCode, Subscribe, SubscribeFilter, SubscribeProperties,
    SubscriptionOptions, Will as WireWill, WillProperties, decode, encode,
};
use smallvec::SmallVec;

use crate::{
    CloseReason, ConnectRequest, Connection, Delivery, Event, Message, MessageProperties, Session,
    SessionConfig,
};

/// One client and the connection under test.
pub struct Pair {
    pub conn: Connection,
    pub now: Instant,
    pub version: ProtocolVersion,
    /// Bytes transmitted by the connection and not yet decoded.
    inbox: BytesMut,
}

impl Pair {
    pub fn new(cfg: SessionConfig, version: ProtocolVersion) -> Self {
        let now = Instant::now();
        Pair {
            conn: Connection::new(Arc::new(cfg), now),
            now,
            version,
            inbox: BytesMut::new(),
        }
    }

    /// Encodes `packet` as the client would and feeds it to the connection.
    pub fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        encode(&packet, self.version, &mut buf).expect("test packet encodes");
        self.conn.handle_bytes(self.now, &buf);
    }

    /// Feeds raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.handle_bytes(self.now, bytes);
    }

    /// Every packet the connection transmitted since the last call.
    pub fn recv(&mut self) -> Vec<Packet> {
        // Bounded: each call may refill the output only from the bounded window/queue.
        for _ in 0..1000 {
            if !self.conn.poll_transmit(&mut self.inbox) {
                break;
            }
        }
        let mut out = Vec::new();
        while let Some(p) = decode(
            &mut self.inbox,
            self.version,
            halyard_codec::MAX_PACKET_SIZE,
        )
        .expect("server output decodes")
        {
            out.push(p);
        }
        assert!(
            self.inbox.is_empty(),
            "partial packet left in server output"
        );
        out
    }

    /// Exactly one transmitted packet.
    pub fn recv_one(&mut self) -> Packet {
        let mut v = self.recv();
        assert_eq!(v.len(), 1, "expected one packet, got {v:?}");
        v.remove(0)
    }

    /// Every event queued since the last call.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Exactly one event.
    pub fn event(&mut self) -> Event {
        let mut v = self.events();
        assert_eq!(v.len(), 1, "expected one event, got {v:?}");
        v.remove(0)
    }

    /// The single event, which must be `Closed`: returns its will and reason.
    pub fn closed(&mut self) -> (Option<crate::Will>, CloseReason) {
        match self.event() {
            Event::Closed { will, reason } => (will.map(|w| *w), reason),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    /// Advances virtual time and fires the timeout if it is due.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
            self.conn.handle_timeout(self.now);
        }
    }

    /// Sends CONNECT and returns the request from `Event::Connect`.
    pub fn connect_request(&mut self, c: Connect) -> ConnectRequest {
        self.send(Packet::Connect(Box::new(c)));
        match self.event() {
            Event::Connect(r) => *r,
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    /// Connects with `c`, accepts with `session`, and checks the CONNACK is a success.
    pub fn establish(&mut self, c: Connect, session: Option<Session>) -> ConnectRequest {
        let req = self.connect_request(c);
        let present = session.is_some();
        self.conn.accept_connect(self.now, session, present);
        match self.recv().first() {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        req
    }

    /// A client `id` connected with default CONNECT options.
    pub fn connected(version: ProtocolVersion, cfg: SessionConfig) -> Self {
        let mut pair = Pair::new(cfg, version);
        pair.establish(connect(version, "client"), None);
        pair
    }

    /// Sends a PUBLISH.
    pub fn publish(&mut self, topic: &str, qos: QoS, packet_id: u16) {
        self.send(Packet::Publish(publish(topic, qos, packet_id)));
    }

    /// Sends a SUBSCRIBE for one filter.
    pub fn subscribe(&mut self, packet_id: u16, filter: &str, options: SubscriptionOptions) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options,
            }],
            properties: SubscribeProperties::default(),
        }));
    }

    /// Sends PUBACK/PUBREC/PUBREL/PUBCOMP built by `f` for `id`.
    pub fn ack(&mut self, f: fn(PubResponse) -> Packet, id: u16) {
        self.send(f(PubResponse::new(id)));
    }

    /// Expects a DISCONNECT (5.0) with `code` then a closed connection; for 3.1.1 expects no
    /// packet. Returns the close reason.
    pub fn expect_protocol_close(&mut self, code: ReasonCode) -> CloseReason {
        let out = self.recv();
        match self.version {
            ProtocolVersion::V5 => match out.as_slice() {
                [Packet::Disconnect(d)] => assert_eq!(d.reason_code, code),
                other => panic!("expected DISCONNECT {code}, got {other:?}"),
            },
            ProtocolVersion::V311 => assert!(out.is_empty(), "3.1.1 got {out:?}"),
        }
        assert!(self.conn.is_closed());
        let (_, reason) = self.closed();
        if let CloseReason::Protocol(e) = &reason {
            assert_eq!(e.reason_code(), code);
        }
        reason
    }
}

/// A CONNECT with clean start, keep alive 0, no will, no properties.
pub fn connect(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 0,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A will on `topic` with payload "gone".
pub fn wire_will(topic: &str) -> WireWill {
    WireWill {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    }
}

/// A PUBLISH with payload "hello".
pub fn publish(topic: &str, qos: QoS, packet_id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        payload: Bytes::from_static(b"hello"),
        properties: PublishProperties::default(),
    }
}

/// A message on `topic` with payload "m".
pub fn message(topic: &str, qos: QoS) -> Message {
    Message {
        topic: MqttString::from(topic),
        payload: Bytes::from_static(b"m"),
        qos,
        retain: false,
        properties: MessageProperties::default(),
        expires_at: None,
        publisher: None,
    }
}

/// A delivery of `message(topic, qos)` at `qos`.
pub fn delivery(topic: &str, qos: QoS) -> Delivery {
    Delivery {
        message: Arc::new(message(topic, qos)),
        qos,
        retain: false,
        subscription_ids: SmallVec::new(),
        packet_id: None,
    }
}

/// The PUBLISH packets in `packets`.
pub fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Both protocol versions, for tests that hold for both.
pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];
