//! Limits and feature switches of the session layer ([`SessionConfig`]).

use std::time::Duration;

use halyard_codec::QoS;
use halyard_topics::TopicLimits;

/// What a full offline/pending queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueuePolicy {
    /// Refuse the new message; the queued ones stay (default).
    #[default]
    DropNewest,
    /// Drop the oldest queued message to make room for the new one.
    DropOldest,
}

/// Every limit and switch of the session layer. One instance is shared (`Arc`) by all the
/// connections of a listener; the server builds it from its TOML configuration.
///
/// Each limit names its default; hitting a limit increments a counter in
/// [`crate::ConnectionStats`] or [`crate::SessionStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time allowed between the creation of a [`crate::Connection`] and the arrival of its
    /// CONNECT packet; then the connection closes (no packet is sent). Default 10 s.
    pub connect_timeout: Duration,
    /// Read timeout for half-sent packets (slowloris): once the CONNECT is accepted, a packet
    /// whose first bytes arrived more than this long ago and that is still incomplete closes
    /// the connection (5.0: DISCONNECT 0x97 quota exceeded first; the will is published).
    /// The clock starts with the read that left the partial packet in the buffer and is not
    /// extended by later bytes, so a client cannot hold a buffer open by trickling bytes.
    /// Before CONNECT [`Self::connect_timeout`] bounds the whole CONNECT instead.
    /// [`Duration::ZERO`] disables it. Default 30 s: a maximum-size packet (1 MiB by default)
    /// then needs at least ~35 KB/s, which a slow cellular uplink still reaches.
    pub partial_packet_timeout: Duration,
    /// Largest keep alive (seconds) the server accepts. Default 65 535 (any value).
    ///
    /// MQTT 5.0: when the client asks for more (or for 0 while [`Self::require_keepalive`]
    /// is set) the CONNACK carries Server Keep Alive = this value and it is enforced
    /// [MQTT-3.2.2-21]. MQTT 3.1.1 has no way to tell the client, so such a CONNECT is
    /// refused with return code 0x02 (identifier rejected), as Mosquitto does.
    pub max_keepalive: u16,
    /// Largest Session Expiry Interval (seconds) the server grants. A larger request (or a
    /// 3.1.1 Clean Session 0, which never expires) is capped to this; a 5.0 client is told the
    /// granted value in the CONNACK Session Expiry Interval [MQTT-3.2.2.3.2]. A DISCONNECT that
    /// raises the interval is capped the same way. Default `u32::MAX` (no cap).
    pub max_session_expiry: u32,
    /// Refuse a keep alive of 0 (no keep alive): 5.0 clients get Server Keep Alive =
    /// [`Self::max_keepalive`], 3.1.1 clients are refused as above. Default false.
    pub require_keepalive: bool,
    /// Our Receive Maximum: QoS 1/2 PUBLISH packets the client may have unacknowledged
    /// towards us; announced in the 5.0 CONNACK. One more is a protocol violation answered
    /// with DISCONNECT 0x93 [MQTT-3.3.4-7]. Default 128. Values of 0 are treated as 1.
    pub receive_maximum: u16,
    /// Our Maximum Packet Size in bytes (whole packet). Larger packets from the client are
    /// refused before they are buffered (DISCONNECT 0x95, [MQTT-3.2.2-15] / 3.1.1: close).
    /// Announced in the 5.0 CONNACK. Default 1 MiB.
    pub max_packet_size: u32,
    /// Our Topic Alias Maximum: aliases the client may use towards us (client -> server).
    /// Announced in the 5.0 CONNACK when non-zero. Default 64.
    pub topic_alias_maximum: u16,
    /// Outgoing QoS 1/2 in-flight window per connection; also capped by the client's
    /// Receive Maximum [MQTT-3.3.4-9]. Messages beyond it wait in the session queue.
    /// Default 32. Values of 0 are treated as 1.
    pub max_inflight: u16,
    /// Messages a session may hold in its pending queue (offline, or waiting for the
    /// in-flight window). Default 1000.
    pub max_queued_messages: usize,
    /// What a full pending queue does. Default [`QueuePolicy::DropNewest`].
    pub queue_policy: QueuePolicy,
    /// Whether QoS 0 messages are queued for an offline session (the specification allows
    /// either). Default false (Mosquitto's default). Online, QoS 0 is never queued.
    pub queue_qos0_offline: bool,
    /// Bytes of encoded output a connection may hold before [`crate::Connection::deliver`]
    /// starts refusing QoS 0 messages (dropped, counted) and queueing QoS 1/2 ones. This
    /// bounds the memory of a slow consumer. Default 1 MiB.
    pub max_pending_output: usize,
    /// SUBSCRIBE/UNSUBSCRIBE packets awaiting the server's answer at once; one more closes
    /// the connection with 0x97 (quota exceeded). Default 64.
    pub max_pending_requests: usize,
    /// Retained messages supported (5.0 Retain Available). When false a PUBLISH with RETAIN=1
    /// is answered with DISCONNECT 0x9A [MQTT-3.2.2-14]. Default true.
    pub retain_available: bool,
    /// Wildcard subscriptions supported; when false they get 0xA2 in the SUBACK. Default true.
    pub wildcard_subscription_available: bool,
    /// Shared subscriptions supported; when false they get 0x9E in the SUBACK. Default true.
    pub shared_subscription_available: bool,
    /// Subscription identifiers supported; when false a SUBSCRIBE carrying one is a
    /// protocol violation answered with DISCONNECT 0xA1. Default true.
    pub subscription_identifiers_available: bool,
    /// Highest QoS accepted from publishers (5.0 Maximum QoS). A PUBLISH above it is answered
    /// with DISCONNECT 0x9B [MQTT-3.2.2-11]; subscriptions are granted at most this QoS.
    /// Default QoS 2.
    pub maximum_qos: QoS,
    /// Most topic aliases the broker assigns on outgoing PUBLISH packets, further capped by
    /// the client's Topic Alias Maximum. 0 disables outgoing aliases. Default 64.
    pub max_topic_alias_out: u16,
    /// Longest client identifier accepted, in bytes; longer ones are refused with 0x85
    /// (3.1.1: 0x02). Default 256.
    pub max_client_id_len: usize,
    /// Subscriptions one session may hold; further new filters get 0x97 (quota exceeded)
    /// in the SUBACK (3.1.1: 0x80). Default 1024.
    pub max_subscriptions: usize,
    /// Prefix of the client identifiers the session assigns to 5.0 clients that send an
    /// empty one. Default `"halyard-"`.
    pub assigned_client_id_prefix: String,
    /// Size limits of topic names and filters (levels, bytes). Default
    /// [`TopicLimits::default`].
    pub topic_limits: TopicLimits,
}

impl SessionConfig {
    /// Default of [`Self::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default of [`Self::partial_packet_timeout`].
    pub const DEFAULT_PARTIAL_PACKET_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of [`Self::receive_maximum`].
    pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 128;
    /// Default of [`Self::max_packet_size`].
    pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;
    /// Default of [`Self::topic_alias_maximum`].
    pub const DEFAULT_TOPIC_ALIAS_MAXIMUM: u16 = 64;
    /// Default of [`Self::max_inflight`].
    pub const DEFAULT_MAX_INFLIGHT: u16 = 32;
    /// Default of [`Self::max_queued_messages`].
    pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1000;
    /// Default of [`Self::max_pending_output`].
    pub const DEFAULT_MAX_PENDING_OUTPUT: usize = 1024 * 1024;
    /// Default of [`Self::max_pending_requests`].
    pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 64;
    /// Default of [`Self::max_topic_alias_out`].
    pub const DEFAULT_MAX_TOPIC_ALIAS_OUT: u16 = 64;
    /// Default of [`Self::max_client_id_len`].
    pub const DEFAULT_MAX_CLIENT_ID_LEN: usize = 256;
    /// Default of [`Self::max_subscriptions`].
    pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;

    /// Effective incoming window: [`Self::receive_maximum`], at least 1.
    pub(crate) fn effective_receive_maximum(&self) -> u16 {
        self.receive_maximum.max(1)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            partial_packet_timeout: Self::DEFAULT_PARTIAL_PACKET_TIMEOUT,
            max_keepalive: u16::MAX,
            require_keepalive: false,
            max_session_expiry: u32::MAX,
            receive_maximum: Self::DEFAULT_RECEIVE_MAXIMUM,
            max_packet_size: Self::DEFAULT_MAX_PACKET_SIZE,
            topic_alias_maximum: Self::DEFAULT_TOPIC_ALIAS_MAXIMUM,
            max_inflight: Self::DEFAULT_MAX_INFLIGHT,
            max_queued_messages: Self::DEFAULT_MAX_QUEUED_MESSAGES,
            queue_policy: QueuePolicy::DropNewest,
            queue_qos0_offline: false,
            max_pending_output: Self::DEFAULT_MAX_PENDING_OUTPUT,
            max_pending_requests: Self::DEFAULT_MAX_PENDING_REQUESTS,
            retain_available: true,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifiers_available: true,
            maximum_qos: QoS::ExactlyOnce,
            max_topic_alias_out: Self::DEFAULT_MAX_TOPIC_ALIAS_OUT,
            max_client_id_len: Self::DEFAULT_MAX_CLIENT_ID_LEN,
            max_subscriptions: Self::DEFAULT_MAX_SUBSCRIPTIONS,
            assigned_client_id_prefix: "halyard-".to_owned(),
            topic_limits: TopicLimits::default(),
        }
    }
}
