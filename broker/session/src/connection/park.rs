//! Parking: an idle connection compacted to the state it needs to resume.
//!
//! A server holding many idle connections keeps each one as a [`ParkedConnection`] instead
//! of a [`Connection`]: only what outlives a quiet moment is kept (the session, the keep
//! alive, the negotiated limits, the will, topic aliases); the buffers, the event queue and
//! the deadlines of the CONNECT and of a half-received packet are empty then and are not
//! carried. [`Connection::park`] refuses a connection with anything in progress, so
//! [`Connection::unpark`] gives back a connection that behaves exactly as the parked one
//! would have.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use halyard_codec::ProtocolVersion;
use smallvec::SmallVec;

use super::{Connection, PeerLimits, PublishCache, Rare, State};
use crate::config::SessionConfig;
use crate::message::Will;
use crate::session::Session;
use crate::stats::ConnectionStats;

/// An idle, connected [`Connection`] without its buffers (see the module documentation).
/// Holds no configuration: [`Connection::unpark`] takes it again.
#[derive(Debug)]
pub struct ParkedConnection {
    session: Option<Session>,
    last_packet: Instant,
    stats: Option<Box<ConnectionStats>>,
    will: Option<Box<Will>>,
    rare: Option<Box<Rare>>,
    peer: PeerLimits,
    connect_expiry_interval: u32,
    /// Bounded by the client's Receive Maximum (a `u16`).
    inflight_sent: u16,
    keep_alive: u16,
    version: ProtocolVersion,
    resend_pending: bool,
}

impl ParkedConnection {
    /// When [`Connection::handle_timeout`] must be called (the keep-alive deadline), as
    /// [`Connection::poll_timeout`] said before parking.
    pub fn poll_timeout(&self) -> Option<Instant> {
        super::keepalive_deadline(self.last_packet, self.keep_alive)
    }
}

impl Connection {
    /// Whether [`Self::park`] would take the connection: connected, with nothing received
    /// but unprocessed (no partial packet), no event or output waiting, no PUBLISH awaiting
    /// the server's answer and no cache lent.
    pub fn can_park(&self) -> bool {
        self.state == State::Connected
            && self.rx.is_empty()
            && self.tx.is_empty()
            && self.events.is_empty()
            && self.incoming.is_empty()
            && self.pending_connect.is_none()
            && self.partial_since.is_none()
            && self.pending_requests() == 0
            && u16::try_from(self.inflight_sent).is_ok()
    }

    /// The connection compacted while idle, or itself back when [`Self::can_park`] is false.
    /// Frees the receive and transmit buffers.
    // The large `Err` is the caller's own connection handed back, not an error to report.
    #[allow(clippy::result_large_err)]
    pub fn park(self) -> Result<ParkedConnection, Connection> {
        if !self.can_park() {
            return Err(self);
        }
        let Ok(inflight_sent) = u16::try_from(self.inflight_sent) else {
            return Err(self);
        };
        Ok(ParkedConnection {
            session: self.session,
            last_packet: self.last_packet,
            stats: self.stats,
            will: self.will,
            rare: self.rare,
            peer: self.peer,
            connect_expiry_interval: self.connect_expiry_interval,
            inflight_sent,
            keep_alive: self.keep_alive,
            version: self.version,
            resend_pending: self.resend_pending,
        })
    }

    /// The connection `parked` was, with configuration `cfg` (the one it was made with),
    /// resumed at `now`.
    pub fn unpark(parked: ParkedConnection, cfg: Arc<SessionConfig>, now: Instant) -> Self {
        Connection {
            cfg,
            state: State::Connected,
            version: parked.version,
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            events: VecDeque::new(),
            stats: parked.stats,
            // Passed long ago: only read while waiting for the CONNECT.
            connect_deadline: parked.last_packet,
            last_packet: parked.last_packet,
            partial_since: None,
            last_now: now.max(parked.last_packet),
            keep_alive: parked.keep_alive,
            pending_connect: None,
            peer: parked.peer,
            session: parked.session,
            will: parked.will,
            connect_expiry_interval: parked.connect_expiry_interval,
            inflight_sent: usize::from(parked.inflight_sent),
            resend_pending: parked.resend_pending,
            incoming: VecDeque::new(),
            pending_subscribes: SmallVec::new(),
            rare: parked.rare,
            cache: PublishCache::default(),
        }
    }
}
