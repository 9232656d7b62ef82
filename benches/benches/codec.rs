//! Codec micro-benchmarks: encode and decode of each packet type (3.1.1 and 5.0).

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use halyard_codec::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, Disconnect, MAX_PACKET_SIZE,
    MqttString, Packet, ProtocolVersion, PubResponse, Publish, PublishProperties, QoS, ReasonCode,
    SubAck, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions, UnsubAck,
    Unsubscribe, UnsubscribeProperties, decode, encode,
};

fn publish(qos: QoS, payload: usize, props: bool) -> Packet {
    let mut properties = PublishProperties::default();
    if props {
        properties.message_expiry_interval = Some(60);
        properties.content_type = Some(MqttString::from("application/octet-stream"));
        properties
            .user_properties
            .push(("trace".into(), "abc123".into()));
    }
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "sensors/building-7/floor-3/room-12/temperature".into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 4242 },
        payload: Bytes::from(vec![0x5au8; payload]),
        properties,
    })
}

fn packets() -> Vec<(&'static str, ProtocolVersion, Packet)> {
    use ProtocolVersion::{V5, V311};
    let connect = |v| {
        Packet::Connect(Box::new(Connect {
            protocol_version: v,
            clean_start: true,
            keep_alive: 60,
            client_id: "bench-client-000123".into(),
            will: None,
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"secret")),
            properties: ConnectProperties::default(),
        }))
    };
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: (0..4)
            .map(|i| SubscribeFilter {
                filter: format!("devices/+/telemetry/{i}/#").into(),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            })
            .collect(),
        properties: SubscribeProperties::default(),
    });
    vec![
        ("connect", V311, connect(V311)),
        ("connect", V5, connect(V5)),
        (
            "connack",
            V5,
            Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                reason_code: ReasonCode::SUCCESS,
                properties: ConnAckProperties {
                    receive_maximum: Some(1024),
                    ..Default::default()
                },
            })),
        ),
        ("publish-q0-64B", V311, publish(QoS::AtMostOnce, 64, false)),
        ("publish-q1-64B", V311, publish(QoS::AtLeastOnce, 64, false)),
        (
            "publish-q1-64B-props",
            V5,
            publish(QoS::AtLeastOnce, 64, true),
        ),
        (
            "publish-q0-4KiB",
            V311,
            publish(QoS::AtMostOnce, 4096, false),
        ),
        ("puback", V311, Packet::PubAck(PubResponse::new(4242))),
        ("puback", V5, Packet::PubAck(PubResponse::new(4242))),
        ("subscribe-4", V5, subscribe),
        (
            "suback-4",
            V5,
            Packet::SubAck(SubAck {
                packet_id: 7,
                reason_codes: vec![ReasonCode::GRANTED_QOS_1; 4],
                properties: Default::default(),
            }),
        ),
        (
            "unsubscribe-1",
            V5,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 8,
                filters: vec!["devices/+/telemetry/0/#".into()],
                properties: UnsubscribeProperties::default(),
            }),
        ),
        (
            "unsuback-1",
            V5,
            Packet::UnsubAck(UnsubAck {
                packet_id: 8,
                reason_codes: vec![ReasonCode::SUCCESS],
                properties: Default::default(),
            }),
        ),
        ("pingreq", V311, Packet::PingReq),
        ("disconnect", V5, Packet::Disconnect(Disconnect::default())),
    ]
}

fn name(n: &str, v: ProtocolVersion) -> String {
    format!("{n}/v{}", v.level())
}

fn codec(c: &mut Criterion) {
    let mut enc = c.benchmark_group("encode");
    for (n, v, p) in packets() {
        let mut out = BytesMut::with_capacity(8192);
        let mut wire = BytesMut::new();
        // The packets above are valid, so encoding cannot fail.
        encode(&p, v, &mut wire).expect("valid packet");
        enc.throughput(Throughput::Bytes(wire.len() as u64));
        enc.bench_function(name(n, v), |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&p), v, &mut out).expect("valid packet");
                black_box(out.len())
            })
        });
    }
    enc.finish();
    let mut dec = c.benchmark_group("decode");
    for (n, v, p) in packets() {
        let mut wire = BytesMut::new();
        encode(&p, v, &mut wire).expect("valid packet");
        let wire = wire.freeze();
        dec.throughput(Throughput::Bytes(wire.len() as u64));
        dec.bench_function(name(n, v), |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| decode(&mut buf, v, MAX_PACKET_SIZE),
                BatchSize::SmallInput,
            )
        });
    }
    dec.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: this crate enables plotters' `ab_glyph` text (for halyard-compare's
    // charts), with which criterion's plot code finds no font and panics.
    config = Criterion::default()
        .without_plots()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
