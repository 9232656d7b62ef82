//! Plain counters read by the server (which turns them into metrics).

use halyard_codec::QoS;

use crate::queue::Dropped;

/// Messages dropped, by reason (see [`Dropped`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// [`Dropped::QueueFull`].
    pub queue_full: u64,
    /// [`Dropped::Expired`].
    pub expired: u64,
    /// [`Dropped::TooLarge`].
    pub too_large: u64,
    /// [`Dropped::OutputFull`].
    pub output_full: u64,
    /// [`Dropped::Qos0Offline`].
    pub qos0_offline: u64,
    /// [`Dropped::NotConnected`].
    pub not_connected: u64,
    /// [`Dropped::Unencodable`].
    pub unencodable: u64,
}

impl DropCounters {
    /// Every counter at zero (as `Default`, usable in constants).
    pub const ZERO: DropCounters = DropCounters {
        queue_full: 0,
        expired: 0,
        too_large: 0,
        output_full: 0,
        qos0_offline: 0,
        not_connected: 0,
        unencodable: 0,
    };

    /// Counts one drop.
    pub fn count(&mut self, reason: Dropped) {
        let c = match reason {
            Dropped::QueueFull => &mut self.queue_full,
            Dropped::Expired => &mut self.expired,
            Dropped::TooLarge => &mut self.too_large,
            Dropped::OutputFull => &mut self.output_full,
            Dropped::Qos0Offline => &mut self.qos0_offline,
            Dropped::NotConnected => &mut self.not_connected,
            Dropped::Unencodable => &mut self.unencodable,
        };
        *c += 1;
    }

    /// Sum of every reason.
    pub fn total(&self) -> u64 {
        self.queue_full
            + self.expired
            + self.too_large
            + self.output_full
            + self.qos0_offline
            + self.not_connected
            + self.unencodable
    }
}

/// Counters of one network connection. Monotonic; read them with
/// [`crate::Connection::stats`] at any time (e.g. after every poll, or on close).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Bytes given to `handle_bytes`.
    pub bytes_in: u64,
    /// Bytes produced by `poll_transmit`.
    pub bytes_out: u64,
    /// Complete packets decoded.
    pub packets_in: u64,
    /// Packets encoded.
    pub packets_out: u64,
    /// PUBLISH packets received, by QoS (index = QoS).
    pub publish_in: [u64; 3],
    /// PUBLISH packets sent (first sends and resends), by QoS (index = QoS).
    pub publish_out: [u64; 3],
    /// PUBLISH packets re-sent with DUP=1 after a reconnect.
    pub publish_resent: u64,
    /// QoS 2 PUBLISH duplicates received and not emitted again.
    pub qos2_duplicates: u64,
    /// Outgoing messages dropped by this connection, by reason (expired, too large, output
    /// backlog, not connected). Drops of the session queue are in [`SessionStats`].
    pub dropped: DropCounters,
    /// Messages pushed into the session queue by this connection (window or output full).
    pub queued: u64,
    /// Times the client exceeded our Receive Maximum (0x93).
    pub receive_maximum_exceeded: u64,
    /// SUBSCRIBE entries refused because of [`crate::SessionConfig::max_subscriptions`].
    pub subscription_limit_hits: u64,
    /// Topic names (PUBLISH, will) or filters (SUBSCRIBE) refused for being longer than
    /// `TopicLimits::max_len` of [`crate::SessionConfig::topic_limits`].
    pub topic_length_limit_hits: u64,
    /// Topic names or filters refused for having more levels than `TopicLimits::max_levels`.
    pub topic_levels_limit_hits: u64,
    /// Protocol violations that closed the connection (any reason).
    pub protocol_errors: u64,
    /// Keep alive timeouts.
    pub keepalive_timeouts: u64,
    /// Connections closed because a packet stayed incomplete
    /// ([`crate::SessionConfig::partial_packet_timeout`]).
    pub partial_packet_timeouts: u64,
    /// PUBACK/PUBREC/PUBCOMP received for a packet identifier not in flight.
    pub unknown_acks: u64,
}

impl ConnectionStats {
    /// Every counter at zero (as `Default`, usable in constants).
    pub const ZERO: ConnectionStats = ConnectionStats {
        bytes_in: 0,
        bytes_out: 0,
        packets_in: 0,
        packets_out: 0,
        publish_in: [0; 3],
        publish_out: [0; 3],
        publish_resent: 0,
        qos2_duplicates: 0,
        dropped: DropCounters::ZERO,
        queued: 0,
        receive_maximum_exceeded: 0,
        subscription_limit_hits: 0,
        topic_length_limit_hits: 0,
        topic_levels_limit_hits: 0,
        protocol_errors: 0,
        keepalive_timeouts: 0,
        partial_packet_timeouts: 0,
        unknown_acks: 0,
    };

    pub(crate) fn count_publish_in(&mut self, qos: QoS) {
        self.publish_in[usize::from(qos.as_u8())] += 1;
    }

    pub(crate) fn count_publish_out(&mut self, qos: QoS) {
        self.publish_out[usize::from(qos.as_u8())] += 1;
    }
}

/// Counters that belong to a [`crate::Session`] and survive its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages dropped by the pending queue, by reason: full, expired while queued, QoS 0
    /// refused offline.
    pub dropped: DropCounters,
    /// Messages accepted into the queue.
    pub enqueued: u64,
}

impl SessionStats {
    /// Every counter at zero (as `Default`, usable in constants).
    pub const ZERO: SessionStats = SessionStats {
        dropped: DropCounters::ZERO,
        enqueued: 0,
    };
}
