//! [`Connection`]: the sans-IO state machine of one network connection.
//!
//! How the server drives it (the model is quinn-proto's `Connection`):
//!
//! 1. [`Connection::new`] when a socket is accepted.
//! 2. Bytes read from the socket: [`Connection::handle_bytes`].
//! 3. When the deadline from [`Connection::poll_timeout`] passes:
//!    [`Connection::handle_timeout`]. Re-read `poll_timeout` after every call.
//! 4. After every call into the connection: drain [`Connection::poll_event`] and answer the
//!    events (`accept_connect`/`reject_connect`, `complete_publish`, `complete_subscribe`,
//!    `complete_unsubscribe`), then [`Connection::poll_transmit`] and write what it gives.
//! 5. Messages for the client: [`Connection::deliver`].
//! 6. Once [`Connection::is_closed`]: flush `poll_transmit`, close the socket, and take the
//!    session back with [`Connection::into_session`]. If the socket fails first:
//!    [`Connection::socket_closed`].

mod connect;
mod inbound;
mod outbound;
mod park;
mod publish_cache;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use halyard_codec::{
    Disconnect, EncodeError, MqttString, Packet, PacketType, ProtocolVersion, PubResponse,
    PublishView, QoS, ReasonCode, decode, encode, encode_publish,
};
use smallvec::SmallVec;

use crate::config::SessionConfig;
use crate::error::{CloseReason, ProtocolError};
use crate::event::Event;
use crate::message::{ClientId, Will};
use crate::session::Session;
use crate::stats::ConnectionStats;

pub use outbound::DeliverOutcome;
pub use park::ParkedConnection;
pub use publish_cache::{
    PUBLISH_CACHE_MAX_PACKET, PUBLISH_CACHE_SLOTS, PUBLISH_CACHE_WAYS, PublishCache,
};

/// `code` if MQTT 5.0 allows it in `packet`, else 0x80 (unspecified error), so that a
/// server-chosen code can never make an acknowledgement unencodable.
fn allowed_or_unspecified(code: ReasonCode, packet: PacketType) -> ReasonCode {
    if code.allowed_in(packet) {
        code
    } else {
        ReasonCode::UNSPECIFIED_ERROR
    }
}

/// When a connection whose last packet arrived at `last_packet` is closed for silence: 1.5
/// times `keep_alive` seconds later (none when `keep_alive` is 0) [MQTT-3.1.2-24].
fn keepalive_deadline(last_packet: Instant, keep_alive: u16) -> Option<Instant> {
    (keep_alive > 0).then(|| last_packet + Duration::from_millis(u64::from(keep_alive) * 1500))
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for CONNECT.
    AwaitConnect,
    /// [`Event::Connect`] emitted; waiting for `accept_connect` / `reject_connect`.
    AwaitDecision,
    /// CONNACK 0x00 sent.
    Connected,
    /// Closed: [`Event::Closed`] emitted; only `poll_transmit` still has work.
    Closed,
}

/// What the session keeps from CONNECT until the server decides.
#[derive(Debug)]
struct PendingConnect {
    client_id: ClientId,
    client_id_assigned: bool,
    clean_start: bool,
    session_expiry_interval: u32,
    /// The granted interval is below the requested one ([`SessionConfig::max_session_expiry`]):
    /// the 5.0 CONNACK announces it.
    session_expiry_capped: bool,
    will: Option<Will>,
    server_keep_alive: Option<u16>,
}

/// Limits the client announced in CONNECT (5.0; 3.1.1 gets the defaults).
#[derive(Debug, Clone, Copy)]
struct PeerLimits {
    /// Client's Receive Maximum (absent = 65,535).
    receive_maximum: u16,
    /// Client's Maximum Packet Size (absent = no limit).
    max_packet_size: u32,
    /// Client's Topic Alias Maximum (absent = 0).
    topic_alias_maximum: u16,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            receive_maximum: u16::MAX,
            max_packet_size: halyard_codec::MAX_PACKET_SIZE,
            topic_alias_maximum: 0,
        }
    }
}

/// A QoS 1/2 PUBLISH received and emitted, awaiting `complete_publish`.
#[derive(Debug, Clone, Copy)]
struct Incoming {
    packet_id: u16,
    qos: QoS,
    /// The server's answer, once given. Acknowledgements leave in arrival order
    /// [MQTT-4.6.0-2] [MQTT-4.6.0-3].
    result: Option<ReasonCode>,
}

/// The maps of a [`Connection`] that most connections never fill (see `Connection::rare`).
#[derive(Debug, Default)]
struct Rare {
    /// Topic aliases the client set (5.0), at most `topic_alias_maximum`.
    aliases_in: HashMap<u16, MqttString>,
    /// Topic aliases the server set (5.0), at most the client's Topic Alias Maximum.
    aliases_out: HashMap<MqttString, u16>,
    /// UNSUBSCRIBEs awaiting `complete_unsubscribe` (with the SUBSCRIBEs, at most
    /// `max_pending_requests`).
    pending_unsubscribes: HashMap<u16, Vec<MqttString>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.aliases_in.is_empty()
            && self.aliases_out.is_empty()
            && self.pending_unsubscribes.is_empty()
    }
}

/// A SUBSCRIBE awaiting `complete_subscribe`: its packet identifier and how many new
/// filters it would add (counted against `max_subscriptions` meanwhile). The requests
/// themselves travel with [`Event::Subscribe`] and come back with the server's answer.
#[derive(Debug, Clone, Copy)]
struct PendingSubscribe {
    packet_id: u16,
    new_filters: u32,
}

/// The protocol state machine of one client network connection (MQTT 3.1.1 or 5.0).
///
/// Sans-IO: bytes and `now` in, bytes, [`Event`]s and deadlines out. It never reads the
/// clock, never blocks and never panics on network input. See the module documentation for
/// the calling sequence.
#[derive(Debug)]
pub struct Connection {
    cfg: Arc<SessionConfig>,
    state: State,
    version: ProtocolVersion,
    rx: BytesMut,
    tx: BytesMut,
    events: VecDeque<Event>,
    /// Boxed and allocated at the first count: [`Self::take_stats`] frees it, so a
    /// connection whose server takes its counters after every step holds none while idle.
    stats: Option<Box<ConnectionStats>>,
    connect_deadline: Instant,
    last_packet: Instant,
    /// When the incomplete packet at the front of `rx` started arriving (the read that left
    /// it there); `None` while `rx` is empty. See [`SessionConfig::partial_packet_timeout`].
    partial_since: Option<Instant>,
    /// The latest `now` given to any method (for work triggered by `poll_transmit`).
    last_now: Instant,
    keep_alive: u16,
    /// Boxed: present only between CONNECT and the server's decision.
    pending_connect: Option<Box<PendingConnect>>,
    peer: PeerLimits,
    session: Option<Session>,
    /// Boxed: most connections have none, and a `Will` is large.
    will: Option<Box<Will>>,
    /// Session Expiry Interval of the CONNECT (for [MQTT-3.14.2-2]).
    connect_expiry_interval: u32,
    /// Outgoing messages sent on this connection and not yet acknowledged (the window).
    inflight_sent: usize,
    /// The session has in-flight messages not yet (re)sent on this connection.
    resend_pending: bool,
    incoming: VecDeque<Incoming>,
    /// SUBSCRIBEs awaiting the server's answer (none while parked). Two inline, in the 24
    /// bytes of a `Vec`: a client subscribing after its CONNACK allocated (and freed) a
    /// vector for its one SUBSCRIBE (benches/RESULTS.md, session 15).
    pending_subscribes: SmallVec<[PendingSubscribe; 2]>,
    /// Boxed, allocated on first use and freed when empty again: most connections never
    /// use topic aliases and have no UNSUBSCRIBE awaiting an answer.
    rare: Option<Box<Rare>>,
    /// The server's shared cache, lent for one [`Connection::deliver_cached`] call (empty
    /// otherwise).
    cache: PublishCache,
}

impl Connection {
    /// The rarely used maps, allocated now if they were not.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Frees the rarely used maps once they are all empty.
    fn trim_rare(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// SUBSCRIBE and UNSUBSCRIBE requests awaiting the server's answer.
    fn pending_requests(&self) -> usize {
        self.pending_subscribes.len()
            + self
                .rare
                .as_ref()
                .map_or(0, |r| r.pending_unsubscribes.len())
    }

    /// A connection for a socket accepted at `now`. The CONNECT must arrive before
    /// `now + cfg.connect_timeout`.
    pub fn new(cfg: Arc<SessionConfig>, now: Instant) -> Self {
        let connect_deadline = now + cfg.connect_timeout;
        Connection {
            cfg,
            state: State::AwaitConnect,
            version: ProtocolVersion::V311,
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            events: VecDeque::new(),
            stats: None,
            connect_deadline,
            last_packet: now,
            partial_since: None,
            last_now: now,
            keep_alive: 0,
            pending_connect: None,
            peer: PeerLimits::default(),
            session: None,
            will: None,
            connect_expiry_interval: 0,
            inflight_sent: 0,
            resend_pending: false,
            incoming: VecDeque::new(),
            pending_subscribes: SmallVec::new(),
            rare: None,
            cache: PublishCache::default(),
        }
    }

    /// Feeds bytes received from the socket. Complete packets are processed at once
    /// (events queue up for [`Self::poll_event`], replies for [`Self::poll_transmit`]);
    /// a partial packet is buffered (at most [`SessionConfig::max_packet_size`] bytes plus
    /// this call's input). Ignored once closed. Between [`Event::Connect`] and the server's
    /// answer, bytes are buffered without being processed [MQTT-3.1.4-5], at most
    /// [`SessionConfig::max_packet_size`] of them (more closes the connection).
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.last_now = self.last_now.max(now);
        self.stats_mut().bytes_in += data.len() as u64;
        if self.state == State::AwaitDecision
            && self.rx.len() + data.len() > self.cfg.max_packet_size as usize
        {
            // The client keeps sending while its CONNECT awaits an answer: bound the buffer.
            self.protocol_error(ProtocolError::InputBeforeConnack);
            return;
        }
        self.rx.extend_from_slice(data);
        self.process_input(now);
    }

    /// Decodes and handles every complete buffered packet, while allowed, then restarts the
    /// partial-packet clock when the bytes left over belong to a packet begun in this call.
    fn process_input(&mut self, now: Instant) {
        let decoded = self.decode_input(now);
        if self.rx.is_empty() {
            self.partial_since = None;
        } else if decoded || self.partial_since.is_none() {
            // A packet completed in this call, so what is left started arriving now.
            self.partial_since = Some(now);
        }
    }

    /// The loop of [`Self::process_input`]; returns whether a packet was decoded.
    fn decode_input(&mut self, now: Instant) -> bool {
        let mut decoded = false;
        loop {
            match self.state {
                State::AwaitDecision | State::Closed => return decoded,
                State::AwaitConnect => {
                    if let Some(&first) = self.rx.first()
                        && first >> 4 != PacketType::Connect as u8
                    {
                        self.protocol_error(ProtocolError::FirstPacketNotConnect);
                        return decoded;
                    }
                }
                State::Connected => {}
            }
            if self.state == State::Connected
                && self.cfg.max_packet_size >= 4
                && let Some(ack) = halyard_codec::take_short_ack(&mut self.rx)
            {
                match ack {
                    Ok((t, id)) => {
                        decoded = true;
                        self.stats_mut().packets_in += 1;
                        self.last_packet = now;
                        self.handle_short_ack(now, t, id);
                        continue;
                    }
                    Err(e) => {
                        self.protocol_error(ProtocolError::Decode(e));
                        return decoded;
                    }
                }
            }
            let connect_version = if self.state == State::AwaitConnect {
                halyard_codec::peek_connect_version(&self.rx)
            } else {
                None
            };
            match decode(&mut self.rx, self.version, self.cfg.max_packet_size) {
                Ok(None) => return decoded,
                Ok(Some(packet)) => {
                    decoded = true;
                    self.stats_mut().packets_in += 1;
                    self.last_packet = now;
                    self.handle_packet(now, packet);
                }
                Err(e) => {
                    if self.state == State::AwaitConnect {
                        self.connect_decode_error(e, connect_version);
                    } else {
                        self.protocol_error(ProtocolError::Decode(e));
                    }
                    return decoded;
                }
            }
        }
    }

    /// An acknowledgement taken with [`halyard_codec::take_short_ack`]: as
    /// [`Self::handle_packet`] with the decoded packet, without building it.
    fn handle_short_ack(&mut self, now: Instant, t: PacketType, id: u16) {
        let r = PubResponse::new(id);
        match t {
            PacketType::PubAck => self.handle_puback(now, r),
            PacketType::PubRec => self.handle_pubrec(now, r),
            PacketType::PubRel => self.handle_pubrel(r),
            _ => self.handle_pubcomp(now, r),
        }
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) {
        if self.state == State::AwaitConnect {
            match packet {
                Packet::Connect(c) => self.handle_connect(now, *c),
                _ => self.protocol_error(ProtocolError::FirstPacketNotConnect),
            }
            return;
        }
        match packet {
            Packet::Connect(_) => self.protocol_error(ProtocolError::SecondConnect),
            Packet::Publish(p) => self.handle_publish(now, p),
            Packet::PubAck(r) => self.handle_puback(now, r),
            Packet::PubRec(r) => self.handle_pubrec(now, r),
            Packet::PubRel(r) => self.handle_pubrel(r),
            Packet::PubComp(r) => self.handle_pubcomp(now, r),
            Packet::Subscribe(s) => self.handle_subscribe(s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u),
            Packet::PingReq => {
                self.send(&Packet::PingResp);
            }
            Packet::Disconnect(d) => self.handle_disconnect(d),
            Packet::Auth(_) => self.protocol_error(ProtocolError::UnexpectedAuth),
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                self.protocol_error(ProtocolError::ServerOnlyPacket(other.packet_type()));
            }
        }
    }

    /// Handles an expired deadline (see [`Self::poll_timeout`]): no CONNECT within
    /// [`SessionConfig::connect_timeout`] closes silently; no packet within 1.5 x keep alive
    /// closes (5.0: after DISCONNECT 0x8D) and returns the will [MQTT-3.1.2-24]
    /// (5.0 [MQTT-3.1.2-22]); a packet still incomplete
    /// [`SessionConfig::partial_packet_timeout`] after its first bytes arrived closes with
    /// [`CloseReason::PartialPacketTimeout`] (5.0: after DISCONNECT 0x97, the limit being an
    /// implementation-imposed one; 0x8D would claim no packet arrived, which may be false)
    /// and returns the will, as for any close without DISCONNECT [MQTT-3.1.2-8]. Calling it
    /// early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        match self.state {
            State::AwaitConnect if now >= self.connect_deadline => {
                self.close(CloseReason::ConnectTimeout, false);
            }
            State::Connected => {
                if let Some(deadline) = self.keepalive_deadline()
                    && now >= deadline
                {
                    self.stats_mut().keepalive_timeouts += 1;
                    self.send_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT);
                    self.close(CloseReason::KeepAliveTimeout, true);
                } else if let Some(deadline) = self.partial_packet_deadline()
                    && now >= deadline
                {
                    self.stats_mut().partial_packet_timeouts += 1;
                    self.send_disconnect(ReasonCode::QUOTA_EXCEEDED);
                    self.close(CloseReason::PartialPacketTimeout, true);
                }
            }
            _ => {}
        }
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        keepalive_deadline(self.last_packet, self.keep_alive)
    }

    /// When the incomplete packet in the receive buffer must be complete (connected only).
    fn partial_packet_deadline(&self) -> Option<Instant> {
        let timeout = self.cfg.partial_packet_timeout;
        if timeout.is_zero() {
            return None;
        }
        // An overflowing deadline (an absurd timeout) means never.
        self.partial_since.and_then(|t| t.checked_add(timeout))
    }

    /// The next instant at which [`Self::handle_timeout`] must be called, or `None`:
    /// the CONNECT deadline before CONNECT; once connected the earlier of the keep-alive
    /// deadline (1.5 x keep alive after the last packet received) and, while a packet is
    /// half received, the partial-packet deadline; nothing while the server decides on the
    /// CONNECT or once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitConnect => Some(self.connect_deadline),
            State::Connected => match (self.keepalive_deadline(), self.partial_packet_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            State::AwaitDecision | State::Closed => None,
        }
    }

    /// Moves all pending output (every packet encoded since the last call, batched) to the
    /// end of `out`. Returns whether anything was written. Call after every call into the
    /// connection, and again until it returns false: when the output backlog
    /// ([`SessionConfig::max_pending_output`]) had held queued messages back, emptying it
    /// sends more of them. After close it yields the final CONNACK or DISCONNECT.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        if self.tx.is_empty() {
            return false;
        }
        self.stats_mut().bytes_out += self.tx.len() as u64;
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.extend_from_slice(&self.tx);
            self.tx.clear();
        }
        // Queued messages held back by the output backlog can go now.
        self.pump(self.last_now);
        true
    }

    /// Bytes of output waiting for [`Self::poll_transmit`].
    pub fn pending_output_len(&self) -> usize {
        self.tx.len()
    }

    /// Whether [`Self::poll_event`] has an event to give.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the server, in order. Drain it after every call into the
    /// connection.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > 0 {
            // Drained: an idle connection keeps no event buffer (an `Event` is 40 B; a busy
            // one allocates it again on its next event).
            self.events = VecDeque::new();
        }
        event
    }

    /// True once the connection is closed ([`Event::Closed`] was queued): flush
    /// [`Self::poll_transmit`], then close the socket. Input is ignored from then on.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The peer closed the socket or it failed. Emits [`Event::Closed`] with
    /// [`CloseReason::SocketClosed`] and the will (if the connection was accepted), unless
    /// the connection was already closed (e.g. after a DISCONNECT, whose decision stands).
    pub fn socket_closed(&mut self, _now: Instant) {
        let will = self.state == State::Connected;
        self.close(CloseReason::SocketClosed, will);
    }

    /// Server-initiated close, e.g. 0x8E (session taken over) or 0x8B (server shutting
    /// down). Accepted 5.0 connections get DISCONNECT with `reason`; 3.1.1 ones are just
    /// closed. Emits [`Event::Closed`] with [`CloseReason::ServerDisconnect`] and the will:
    /// the will is always returned (the client did not disconnect normally); on takeover the
    /// server must cancel it when the new connection resumes the session (Clean Start 0) and
    /// the will delay is above 0 (MQTT 5.0 §3.1.3.2.2), and publish it otherwise.
    ///
    /// Before the CONNECT is answered this is [`Self::reject_connect`]; before CONNECT it
    /// closes without a packet. No-op once closed.
    pub fn disconnect(&mut self, reason: ReasonCode) {
        match self.state {
            State::AwaitConnect => self.close(CloseReason::ServerDisconnect(reason), false),
            State::AwaitDecision => self.reject_connect(reason),
            State::Connected => {
                self.send_disconnect(reason);
                self.close(CloseReason::ServerDisconnect(reason), true);
            }
            State::Closed => {}
        }
    }

    /// Gives the session back after close. `Some` only when it must outlive the connection
    /// (Session Expiry Interval > 0, which includes 3.1.1 Clean Session 0): the server keeps
    /// it (calling [`Session::enqueue`] for offline messages) until a new connection resumes
    /// it or it expires. `None` when the session ends with the connection or the CONNECT
    /// was never accepted; to remove the ended session's subscriptions from the routing
    /// table, read them through [`Self::session`] before calling this.
    pub fn into_session(self) -> Option<Session> {
        self.session.filter(|s| s.expiry_interval() > 0)
    }

    /// The session while the connection owns it (after `accept_connect`).
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The changes recorded in the owned session since the last call
    /// ([`Session::take_changes`]; empty unless the session tracks changes) and the session
    /// to read the changed entries from. `None` before `accept_connect`.
    pub fn take_session_changes(&mut self) -> Option<(crate::SessionChanges, &Session)> {
        let s = self.session.as_mut()?;
        let changes = s.take_changes();
        Some((changes, s))
    }

    /// Session Expiry Interval in force (seconds; [`crate::SESSION_NEVER_EXPIRES`] =
    /// never): from CONNECT, possibly changed by the client's 5.0 DISCONNECT. `None` before
    /// CONNECT.
    pub fn session_expiry_interval(&self) -> Option<u32> {
        match (&self.session, &self.pending_connect) {
            (Some(s), _) => Some(s.expiry_interval()),
            (None, Some(p)) => Some(p.session_expiry_interval),
            (None, None) => None,
        }
    }

    /// Client identifier (after CONNECT).
    pub fn client_id(&self) -> Option<&ClientId> {
        match (&self.session, &self.pending_connect) {
            (Some(s), _) => Some(s.client_id()),
            (None, Some(p)) => Some(&p.client_id),
            (None, None) => None,
        }
    }

    /// Protocol version (MQTT 3.1.1 until a CONNECT says otherwise).
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.version
    }

    /// Keep alive in force, seconds (0 = none).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// Counters of this connection.
    pub fn stats(&self) -> &ConnectionStats {
        static ZERO: ConnectionStats = ConnectionStats::ZERO;
        self.stats.as_deref().unwrap_or(&ZERO)
    }

    /// The counters, allocated if they were not.
    fn stats_mut(&mut self) -> &mut ConnectionStats {
        self.stats.get_or_insert_with(Box::default)
    }

    /// The counters counted since the previous call (or since the start), zeroing them:
    /// for a server that adds deltas to its metrics without keeping a copy of the last
    /// totals. [`Self::stats`] then shows only what was counted after this call.
    pub fn take_stats(&mut self) -> ConnectionStats {
        self.stats.take().map(|s| *s).unwrap_or_default()
    }

    /// [`Self::take_stats`] for a connection that goes on counting at once (a busy one):
    /// the counters are zeroed in place and their allocation is kept for the next count
    /// instead of being freed and allocated again. Use [`Self::take_stats`] before the
    /// connection goes idle, so that an idle connection holds no counters.
    pub fn take_stats_kept(&mut self) -> ConnectionStats {
        self.stats
            .as_deref_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The configuration this connection runs with.
    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.cfg
    }

    fn is_v5(&self) -> bool {
        self.version == ProtocolVersion::V5
    }

    /// Encodes a packet into the output. Control packets built here always encode; an
    /// error (only possible for values taken from the peer or the server, e.g. an
    /// oversized user property) drops the packet and returns false. Nothing is sent once
    /// closed.
    fn send(&mut self, packet: &Packet) -> bool {
        self.send_with(|version, tx| encode(packet, version, tx))
    }

    /// Encodes a PUBLISH given by its borrowed fields; false when closed or unencodable.
    fn send_view(&mut self, view: &PublishView<'_>) -> bool {
        self.send_with(|version, tx| encode_publish(view, version, tx))
    }

    /// Appends one packet to the output with `write` (an encoder: on error it leaves the
    /// output as it was) and counts it; false when closed or unencodable.
    fn send_with(
        &mut self,
        write: impl FnOnce(ProtocolVersion, &mut BytesMut) -> Result<(), EncodeError>,
    ) -> bool {
        if self.state == State::Closed {
            return false;
        }
        match write(self.version, &mut self.tx) {
            Ok(()) => {
                self.stats_mut().packets_out += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// 5.0 DISCONNECT with `reason` (nothing for 3.1.1, which has no server DISCONNECT).
    fn send_disconnect(&mut self, reason: ReasonCode) {
        if self.is_v5() && self.state == State::Connected {
            self.send(&Packet::Disconnect(Disconnect {
                reason_code: allowed_or_unspecified(reason, PacketType::Disconnect),
                ..Disconnect::default()
            }));
        }
    }

    /// Closes because the client broke the protocol: 5.0 DISCONNECT with the reason code
    /// when accepted, then close; the will is returned when the connection was accepted.
    fn protocol_error(&mut self, err: ProtocolError) {
        if self.state == State::Closed {
            return;
        }
        self.stats_mut().protocol_errors += 1;
        if matches!(err, ProtocolError::ReceiveMaximumExceeded) {
            self.stats_mut().receive_maximum_exceeded += 1;
        }
        self.send_disconnect(err.reason_code());
        let will = self.state == State::Connected;
        self.close(CloseReason::Protocol(err), will);
    }

    /// Enters `Closed` and emits [`Event::Closed`] (once). The will is returned only when
    /// `send_will`; it is forgotten either way.
    fn close(&mut self, reason: CloseReason, send_will: bool) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        let will = self.will.take().filter(|_| send_will);
        self.rx = BytesMut::new();
        self.partial_since = None;
        self.pending_subscribes = SmallVec::new();
        if let Some(r) = self.rare.as_mut() {
            r.pending_unsubscribes.clear();
        }
        self.trim_rare();
        if let Some(s) = self.session.as_mut() {
            s.reset_sent_here();
        }
        self.inflight_sent = 0;
        self.events.push_back(Event::Closed { will, reason });
    }
}
