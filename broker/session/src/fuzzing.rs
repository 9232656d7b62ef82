//! The body of the `session_input` fuzz target (`fuzz/` in this crate), public so that a
//! plain unit test replays the committed corpus through exactly the same checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use halyard_codec::{MAX_PACKET_SIZE, MqttString, QoS, ReasonCode, decode};
use smallvec::SmallVec;

use crate::{Connection, Delivery, Event, Message, MessageProperties, SessionConfig};

/// Small limits so that short inputs reach them.
fn fuzz_config() -> SessionConfig {
    SessionConfig {
        receive_maximum: 3,
        max_inflight: 2,
        max_queued_messages: 4,
        topic_alias_maximum: 2,
        max_keepalive: 30,
        max_pending_requests: 2,
        max_packet_size: 512,
        max_pending_output: 256,
        max_subscriptions: 3,
        partial_packet_timeout: Duration::from_secs(5),
        ..SessionConfig::default()
    }
}

/// Answers every queued event as a server would; returns how many `Closed` it saw.
pub(crate) fn answer_events(conn: &mut Connection, now: Instant, accept: bool) -> usize {
    let mut closed = 0;
    // Bounded: every answer queues at most a few events.
    for _ in 0..10_000 {
        let Some(event) = conn.poll_event() else {
            break;
        };
        match event {
            Event::Connect(_) if accept => conn.accept_connect(now, None, false),
            Event::Connect(_) => conn.reject_connect(ReasonCode::NOT_AUTHORIZED),
            Event::Publish {
                packet_id: Some(id),
                ..
            } => conn.complete_publish(now, id, ReasonCode::SUCCESS),
            Event::Publish { .. } => {}
            Event::Subscribe {
                packet_id,
                requests,
            } => {
                let granted = requests
                    .iter()
                    .map(|r| ReasonCode::granted(r.options.qos))
                    .collect();
                conn.complete_subscribe(now, packet_id, requests, granted);
            }
            Event::Unsubscribe { packet_id, .. } => {
                conn.complete_unsubscribe(now, packet_id, Vec::new());
            }
            Event::Closed { .. } => closed += 1,
        }
    }
    closed
}

/// Drains the output; panics unless it decodes as whole packets.
pub(crate) fn drain_output(conn: &mut Connection) {
    let mut out = BytesMut::new();
    for _ in 0..10_000 {
        if !conn.poll_transmit(&mut out) {
            break;
        }
    }
    let version = conn.protocol_version();
    while !out.is_empty() {
        match decode(&mut out, version, MAX_PACKET_SIZE) {
            Ok(Some(_)) => {}
            other => panic!("connection output does not decode: {other:?}"),
        }
    }
}

fn delivery(qos: QoS, topic: u8) -> Delivery {
    Delivery {
        message: Arc::new(Message {
            topic: MqttString::from(format!("t/{topic}")),
            payload: Bytes::from_static(b"fuzz"),
            qos,
            retain: false,
            properties: MessageProperties::default(),
            expires_at: None,
            publisher: None,
        }),
        qos,
        retain: false,
        subscription_ids: SmallVec::new(),
        packet_id: None,
    }
}

/// Drives one [`Connection`] with `data` read as a script, checking that nothing panics,
/// that [`Event::Closed`] is emitted at most once (exactly once after a final
/// `socket_closed`), and that every byte transmitted decodes.
///
/// Script: the first byte's bit 0 chooses whether the server accepts the CONNECT. Then
/// each op byte `b` is: `b % 8` in 0..=3 feeds the next `b / 8 + 1` bytes to
/// `handle_bytes`; 4 advances time by `b / 8` seconds (then `handle_timeout` if due);
/// 5 delivers a message at QoS `(b / 8) % 3`; 6 is `socket_closed`; 7 is
/// `disconnect(0x8E)`.
pub fn session_input(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let accept = mode & 1 == 0;
    let mut now = Instant::now();
    let mut conn = Connection::new(Arc::new(fuzz_config()), now);
    let mut closed = 0;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let arg = op / 8;
        match op % 8 {
            0..=3 => {
                let n = usize::from(arg).saturating_add(1).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                conn.handle_bytes(now, chunk);
            }
            4 => {
                now += Duration::from_secs(u64::from(arg));
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.handle_timeout(now);
                }
            }
            5 => {
                let qos = QoS::from_u8(arg % 3).unwrap_or_default();
                let _ = conn.deliver(now, delivery(qos, arg % 4));
            }
            6 => conn.socket_closed(now),
            _ => conn.disconnect(ReasonCode::SESSION_TAKEN_OVER),
        }
        closed += answer_events(&mut conn, now, accept);
        drain_output(&mut conn);
        assert!(closed <= 1, "Closed emitted {closed} times");
    }
    conn.socket_closed(now);
    closed += answer_events(&mut conn, now, accept);
    assert_eq!(closed, 1, "Closed must be emitted exactly once");
    drop(conn.into_session());
}
