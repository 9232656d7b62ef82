//! Fuzz-style property test: arbitrary sequences of valid packets, random bytes, timeouts,
//! deliveries and server answers never panic, `Closed` is emitted at most once, and what
//! the connection transmits always decodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use halyard_codec::{
    Auth, Connect, ConnectProperties, Disconnect, DisconnectProperties, Packet, ProtocolVersion,
    PubResponse, Publish, PublishProperties, QoS, ReasonCode, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions, Unsubscribe, UnsubscribeProperties, encode,
};
use proptest::prelude::*;

use super::util::delivery;
use crate::fuzzing::{answer_events, drain_output, session_input};
use crate::{Connection, SessionConfig};

const TOPICS: [&str; 6] = ["a", "a/b", "", "a/+", "$share/g/a", "#"];

#[derive(Debug, Clone)]
enum Op {
    Packet(PacketSpec),
    Raw(Vec<u8>),
    Advance(u16),
    Deliver(u8, usize),
    SocketClosed,
    Disconnect(u8),
}

#[derive(Debug, Clone)]
enum PacketSpec {
    Connect {
        clean: bool,
        keep_alive: u16,
        v5: bool,
        empty_id: bool,
        auth: bool,
    },
    Publish {
        topic: usize,
        qos: u8,
        id: u16,
        alias: Option<u16>,
        retain: bool,
    },
    Ack {
        kind: u8,
        id: u16,
        code: u8,
    },
    Subscribe {
        id: u16,
        topic: usize,
        qos: u8,
        no_local: bool,
        sub_id: Option<u32>,
    },
    Unsubscribe {
        id: u16,
        topic: usize,
    },
    PingReq,
    Disconnect {
        code: u8,
        expiry: Option<u32>,
    },
    Auth,
}

fn packet_spec() -> impl Strategy<Value = PacketSpec> {
    prop_oneof![
        (
            any::<bool>(),
            0u16..5,
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.1)
        )
            .prop_map(
                |(clean, keep_alive, v5, empty_id, auth)| PacketSpec::Connect {
                    clean,
                    keep_alive,
                    v5,
                    empty_id,
                    auth
                }
            ),
        (
            0..TOPICS.len(),
            0u8..3,
            1u16..5,
            prop::option::of(1u16..4),
            any::<bool>()
        )
            .prop_map(|(topic, qos, id, alias, retain)| PacketSpec::Publish {
                topic,
                qos,
                id,
                alias,
                retain
            }),
        (
            0u8..4,
            1u16..5,
            prop::sample::select(vec![0u8, 0x10, 0x80, 0x92])
        )
            .prop_map(|(kind, id, code)| PacketSpec::Ack { kind, id, code }),
        (
            1u16..4,
            0..TOPICS.len(),
            0u8..3,
            any::<bool>(),
            prop::option::of(1u32..3)
        )
            .prop_map(|(id, topic, qos, no_local, sub_id)| PacketSpec::Subscribe {
                id,
                topic,
                qos,
                no_local,
                sub_id
            }),
        (1u16..4, 0..TOPICS.len()).prop_map(|(id, topic)| PacketSpec::Unsubscribe { id, topic }),
        Just(PacketSpec::PingReq),
        (
            prop::sample::select(vec![0u8, 4, 0x80]),
            prop::option::of(0u32..3)
        )
            .prop_map(|(code, expiry)| PacketSpec::Disconnect { code, expiry }),
        Just(PacketSpec::Auth),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => packet_spec().prop_map(Op::Packet),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Op::Raw),
        1 => (0u16..20).prop_map(Op::Advance),
        2 => (0u8..3, 0..TOPICS.len()).prop_map(|(q, t)| Op::Deliver(q, t)),
        1 => Just(Op::SocketClosed),
        1 => prop::sample::select(vec![0x8Eu8, 0x8B]).prop_map(Op::Disconnect),
    ]
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q % 3).unwrap_or_default()
}

fn build(spec: &PacketSpec) -> Packet {
    match spec.clone() {
        PacketSpec::Connect {
            clean,
            keep_alive,
            v5,
            empty_id,
            auth,
        } => Packet::Connect(Box::new(Connect {
            protocol_version: if v5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            },
            clean_start: clean,
            keep_alive,
            client_id: if empty_id { "".into() } else { "fuzz".into() },
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: Some(5),
                receive_maximum: Some(2),
                topic_alias_maximum: Some(2),
                maximum_packet_size: Some(64),
                authentication_method: auth.then(|| "x".into()),
                ..ConnectProperties::default()
            },
        })),
        PacketSpec::Publish {
            topic,
            qos: q,
            id,
            alias,
            retain,
        } => {
            let q = qos(q);
            Packet::Publish(Publish {
                dup: false,
                qos: q,
                retain,
                topic: TOPICS[topic].into(),
                packet_id: if q == QoS::AtMostOnce { 0 } else { id },
                payload: Bytes::from_static(b"p"),
                properties: PublishProperties {
                    topic_alias: alias,
                    ..PublishProperties::default()
                },
            })
        }
        PacketSpec::Ack { kind, id, code } => {
            let r = PubResponse {
                reason_code: ReasonCode(code),
                ..PubResponse::new(id)
            };
            match kind {
                0 => Packet::PubAck(r),
                1 => Packet::PubRec(r),
                2 => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        }
        PacketSpec::Subscribe {
            id,
            topic,
            qos: q,
            no_local,
            sub_id,
        } => {
            let mut options = SubscriptionOptions::qos(qos(q));
            options.no_local = no_local;
            Packet::Subscribe(Subscribe {
                packet_id: id,
                filters: vec![SubscribeFilter {
                    filter: TOPICS[topic].into(),
                    options,
                }],
                properties: SubscribeProperties {
                    subscription_identifier: sub_id,
                    ..SubscribeProperties::default()
                },
            })
        }
        PacketSpec::Unsubscribe { id, topic } => Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            filters: vec![TOPICS[topic].into()],
            properties: UnsubscribeProperties::default(),
        }),
        PacketSpec::PingReq => Packet::PingReq,
        PacketSpec::Disconnect { code, expiry } => Packet::Disconnect(Disconnect {
            reason_code: ReasonCode(code),
            properties: DisconnectProperties {
                session_expiry_interval: expiry,
                ..DisconnectProperties::default()
            },
        }),
        PacketSpec::Auth => Packet::Auth(Auth::default()),
    }
}

fn run(v5: bool, connect_first: bool, accept: bool, ops: Vec<Op>) {
    let cfg = SessionConfig {
        receive_maximum: 3,
        max_inflight: 2,
        max_queued_messages: 4,
        topic_alias_maximum: 2,
        max_keepalive: 3,
        max_pending_requests: 2,
        ..SessionConfig::default()
    };
    let mut now = Instant::now();
    let mut conn = Connection::new(Arc::new(cfg), now);
    let mut version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let mut closed = 0;
    let mut all = Vec::new();
    if connect_first {
        all.push(Op::Packet(PacketSpec::Connect {
            clean: false,
            keep_alive: 2,
            v5,
            empty_id: false,
            auth: false,
        }));
    }
    all.extend(ops);
    for op in all {
        match op {
            Op::Packet(spec) => {
                if let PacketSpec::Connect { v5, .. } = spec {
                    version = if v5 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V311
                    };
                }
                let mut buf = BytesMut::new();
                if encode(&build(&spec), version, &mut buf).is_ok() {
                    conn.handle_bytes(now, &buf);
                }
            }
            Op::Raw(bytes) => conn.handle_bytes(now, &bytes),
            Op::Advance(secs) => {
                now += Duration::from_secs(u64::from(secs));
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.handle_timeout(now);
                }
            }
            Op::Deliver(q, t) => {
                let topic = match TOPICS[t] {
                    "" | "a/+" | "#" => "x",
                    other => other,
                };
                let _ = conn.deliver(now, delivery(topic, qos(q)));
            }
            Op::SocketClosed => conn.socket_closed(now),
            Op::Disconnect(code) => conn.disconnect(ReasonCode(code)),
        }
        closed += answer_events(&mut conn, now, accept);
        drain_output(&mut conn);
        assert!(closed <= 1, "Closed emitted {closed} times");
    }
    conn.socket_closed(now);
    closed += answer_events(&mut conn, now, accept);
    assert_eq!(closed, 1, "Closed exactly once in the end");
    let _ = conn.into_session();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_sequences_never_panic_and_close_once(
        v5 in any::<bool>(),
        connect_first in prop::bool::weighted(0.8),
        accept in prop::bool::weighted(0.9),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        run(v5, connect_first, accept, ops);
    }
}

#[test]
fn random_bytes_after_connect_never_panic() {
    // A deterministic byte soup (xorshift) after a valid CONNECT, for both versions.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for v5 in [false, true] {
        for _ in 0..200 {
            let ops = (0..8)
                .map(|_| {
                    let bytes = (0..16)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            (x & 0xff) as u8
                        })
                        .collect();
                    Op::Raw(bytes)
                })
                .collect();
            run(v5, true, true, ops);
        }
    }
}

#[test]
fn committed_fuzz_corpus_replays() {
    // The same checks as the cargo-fuzz target `session_input`, on its committed corpus.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/session_input");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        session_input(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n >= 8, "corpus has {n} files");
}
