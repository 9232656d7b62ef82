//! WebSocket layer against tungstenite's client and hand-built frames.

mod common;

use bytes::BytesMut;
use common::{
    CONNACK, CONNECT, Client, MemStream, PINGREQ, client_frame, client_messages, pump, ws_handshake,
};
use halyard_transport::{Acceptor, Layer, Limit, TransportError, WsConfig, WsLayer};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

fn open(protocols: &str) -> (Client, WsLayer, WebSocket<MemStream>, Option<String>) {
    let mut client = Client::plain();
    let mut server = WsLayer::new(WsConfig::default());
    let (ws, proto) = ws_handshake(&mut client, &mut server, protocols, usize::MAX);
    (client, server, ws, proto)
}

#[test]
fn mqtt_bytes_round_trip_in_binary_frames() {
    let (mut client, mut server, mut ws, proto) = open("mqtt");
    assert_eq!(proto.as_deref(), Some("mqtt"));
    assert_eq!(server.subprotocol(), Some("mqtt"));
    assert!(!server.is_handshaking());
    // One frame carrying two MQTT packets.
    ws.send(Message::binary([CONNECT, PINGREQ].concat()))
        .unwrap();
    let mut plain = BytesMut::new();
    assert!(pump(&mut client, &mut server, &mut plain, usize::MAX).is_none());
    assert_eq!(&plain[..], [CONNECT, PINGREQ].concat().as_slice());
    let mut wire = BytesMut::new();
    server.send(CONNACK, &mut wire).unwrap();
    client.incoming(&wire);
    assert_eq!(client_messages(&mut ws), [Message::binary(CONNACK)]);
    assert_eq!(server.take_stats().ws_handshakes, 1);
}

#[test]
fn mqttv31_subprotocol_is_echoed() {
    let (_, server, _, proto) = open("mqttv3.1");
    assert_eq!(proto.as_deref(), Some("mqttv3.1"));
    assert_eq!(server.subprotocol(), Some("mqttv3.1"));
}

#[test]
fn handshake_and_frames_split_across_reads() {
    let mut client = Client::plain();
    let mut server = WsLayer::new(WsConfig::default());
    let (mut ws, _) = ws_handshake(&mut client, &mut server, "mqtt", 1);
    // A packet split over two frames and a frame holding the tail of one packet and all of
    // the next; each received one byte at a time.
    client.write(&client_frame(2, true, &CONNECT[..5]));
    client.write(&client_frame(2, true, &[&CONNECT[5..], PINGREQ].concat()));
    // A fragmented message: binary start, continuation, final continuation.
    client.write(&client_frame(2, false, b"ab"));
    client.write(&client_frame(0, false, b"cd"));
    client.write(&client_frame(0, true, b"ef"));
    let mut plain = BytesMut::new();
    assert!(pump(&mut client, &mut server, &mut plain, 1).is_none());
    assert_eq!(
        &plain[..],
        [CONNECT, PINGREQ, b"abcdef"].concat().as_slice()
    );
    assert!(client_messages(&mut ws).is_empty());
}

#[test]
fn bytes_after_the_upgrade_request_are_frames() {
    let mut server = WsLayer::new(WsConfig::default());
    let mut wire =
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n"
            .to_vec();
    wire.extend(client_frame(2, true, CONNECT));
    let mut plain = BytesMut::new();
    server.receive(&wire, &mut plain).unwrap();
    assert_eq!(&plain[..], CONNECT);
    let mut out = BytesMut::new();
    server.send(&[], &mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
}

#[test]
fn ping_is_answered_with_pong() {
    let (mut client, mut server, mut ws, _) = open("mqtt");
    ws.send(Message::Ping(b"hi"[..].into())).unwrap();
    let mut plain = BytesMut::new();
    assert!(pump(&mut client, &mut server, &mut plain, usize::MAX).is_none());
    assert!(plain.is_empty());
    assert_eq!(client_messages(&mut ws), [Message::Pong(b"hi"[..].into())]);
    assert_eq!(server.take_stats().ws_pings, 1);
}

#[test]
fn client_close_is_answered_and_ends_the_stream() {
    let (mut client, mut server, mut ws, _) = open("mqtt");
    ws.send(Message::binary(PINGREQ)).unwrap();
    ws.close(None).unwrap();
    let mut plain = BytesMut::new();
    assert!(pump(&mut client, &mut server, &mut plain, usize::MAX).is_none());
    assert_eq!(&plain[..], PINGREQ);
    assert!(server.wants_close());
    let msgs = client_messages(&mut ws);
    assert!(matches!(msgs.as_slice(), [Message::Close(_)]), "{msgs:?}");
    assert!(matches!(
        server.send(CONNACK, &mut BytesMut::new()),
        Err(TransportError::Closed)
    ));
}

#[test]
fn server_close_sends_close_frame_1000() {
    let (mut client, mut server, mut ws, _) = open("mqtt");
    server.close();
    assert!(server.wants_close());
    pump(&mut client, &mut server, &mut BytesMut::new(), usize::MAX);
    match client_messages(&mut ws).as_slice() {
        [Message::Close(Some(f))] => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("{other:?}"),
    }
}

fn close_code_seen(ws: &mut WebSocket<MemStream>) -> Option<CloseCode> {
    client_messages(ws).into_iter().find_map(|m| match m {
        Message::Close(Some(f)) => Some(f.code),
        _ => None,
    })
}

#[test]
fn text_frames_are_refused_with_1003() {
    let (mut client, mut server, mut ws, _) = open("mqtt");
    ws.send(Message::text("hello")).unwrap();
    let err = pump(&mut client, &mut server, &mut BytesMut::new(), usize::MAX);
    assert!(matches!(err, Some(TransportError::WsTextFrame)), "{err:?}");
    assert!(server.wants_close());
    assert_eq!(close_code_seen(&mut ws), Some(CloseCode::Unsupported));
    assert_eq!(server.take_stats().ws_text_frames, 1);
}

#[test]
fn oversize_frame_is_refused_with_1009() {
    let mut client = Client::plain();
    let config = WsConfig {
        max_frame_bytes: 100,
        max_message_bytes: 100,
        ..WsConfig::default()
    };
    let mut server = WsLayer::new(config);
    let (mut ws, _) = ws_handshake(&mut client, &mut server, "mqtt", usize::MAX);
    client.write(&client_frame(2, true, &[0; 200]));
    let err = pump(&mut client, &mut server, &mut BytesMut::new(), usize::MAX);
    assert!(
        matches!(
            err,
            Some(TransportError::Limit {
                limit: Limit::WsMessageSize,
                value: 100
            })
        ),
        "{err:?}"
    );
    assert_eq!(close_code_seen(&mut ws), Some(CloseCode::Size));
    assert_eq!(server.take_stats().hits(Limit::WsMessageSize), 1);
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let (mut client, mut server, mut ws, _) = open("mqtt");
    client.write(&[0x82, 0x02, 0xc0, 0x00]);
    let err = pump(&mut client, &mut server, &mut BytesMut::new(), usize::MAX);
    assert!(matches!(err, Some(TransportError::WebSocket(_))), "{err:?}");
    assert_eq!(close_code_seen(&mut ws), Some(CloseCode::Protocol));
    assert_eq!(server.take_stats().ws_protocol_errors, 1);
}

fn refused(request: &[u8], config: WsConfig) -> (TransportError, String, WsLayer) {
    let mut server = WsLayer::new(config);
    let err = server.receive(request, &mut BytesMut::new()).unwrap_err();
    let mut out = BytesMut::new();
    server.send(&[], &mut out).unwrap();
    assert!(server.wants_close());
    (err, String::from_utf8_lossy(&out).into_owned(), server)
}

#[test]
fn upgrade_without_mqtt_subprotocol_is_refused() {
    // [MQTT-6.0.0-3]
    let req = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (err, resp, mut server) = refused(req, WsConfig::default());
    assert!(matches!(err, TransportError::WsHandshake(_)));
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert_eq!(server.take_stats().ws_handshake_refused, 1);
}

#[test]
fn oversize_upgrade_request_is_refused_with_431() {
    let config = WsConfig {
        max_handshake_bytes: 256,
        ..WsConfig::default()
    };
    let mut req = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    req.extend([b'a'; 400]);
    let (err, resp, mut server) = refused(&req, config);
    assert!(matches!(err, TransportError::WsHandshake(_)));
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
    assert_eq!(server.take_stats().hits(Limit::WsHandshakeBytes), 1);
    // The same limit holds when the request trickles in.
    let mut server = WsLayer::new(WsConfig {
        max_handshake_bytes: 256,
        ..WsConfig::default()
    });
    let mut result = Ok(());
    for b in &req {
        result = server.receive(std::slice::from_ref(b), &mut BytesMut::new());
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(TransportError::WsHandshake(_))));
    assert_eq!(server.take_stats().hits(Limit::WsHandshakeBytes), 1);
}

#[test]
fn ws_acceptor_builds_ws_layers() {
    let acceptor = Acceptor::Ws(WsConfig::default());
    assert_eq!(acceptor.kind(), "ws");
    let mut layer = acceptor.reload().unwrap().accept().unwrap();
    let mut client = Client::plain();
    let (mut ws, proto) = ws_handshake(&mut client, &mut layer, "mqtt", usize::MAX);
    assert_eq!(proto.as_deref(), Some("mqtt"));
    ws.send(Message::binary(CONNECT)).unwrap();
    let mut plain = BytesMut::new();
    pump(&mut client, &mut layer, &mut plain, usize::MAX);
    assert_eq!(&plain[..], CONNECT);
}
