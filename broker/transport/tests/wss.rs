//! WebSocket over TLS (`wss`): tungstenite's client over a rustls client against the stacked
//! layers built by `Acceptor::Wss`.

mod common;

use bytes::BytesMut;
use common::{
    BOTH, CONNACK, CONNECT, Client, ClientAuth, PINGREQ, Pki, client_messages, pump, ws_handshake,
};
use halyard_transport::{Acceptor, Layer, TlsAcceptor, Transport, WsConfig};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

fn wss(pki: &Pki, mtls: bool) -> Acceptor {
    Acceptor::Wss(
        TlsAcceptor::load(&pki.settings(mtls)).unwrap(),
        WsConfig::default(),
    )
}

#[test]
fn mqtt_over_websocket_over_tls_with_client_certificate() {
    let pki = Pki::new();
    let acceptor = wss(&pki, true);
    assert_eq!(acceptor.kind(), "wss");
    let mut server = acceptor.accept().unwrap();
    assert!(matches!(server, Transport::Wss(_)));
    let mut client = Client::tls(pki.client(ClientAuth::Good, BOTH));
    // The WebSocket handshake runs inside TLS; every read is split into 7-byte pieces.
    let (mut ws, proto) = ws_handshake(&mut client, &mut server, "mqtt", 7);
    assert_eq!(proto.as_deref(), Some("mqtt"));
    assert!(!server.is_handshaking());
    // The TLS identity is visible through the stack.
    let id = server.peer_identity().expect("client certificate");
    assert_eq!(id.username_override(), Some("sensor-1"));

    ws.send(Message::binary(CONNECT)).unwrap();
    ws.send(Message::binary(PINGREQ)).unwrap();
    let mut plain = BytesMut::new();
    assert!(pump(&mut client, &mut server, &mut plain, 7).is_none());
    assert_eq!(&plain[..], [CONNECT, PINGREQ].concat().as_slice());

    let mut wire = BytesMut::new();
    server.send(CONNACK, &mut wire).unwrap();
    assert!(
        !wire.windows(CONNACK.len()).any(|w| w == CONNACK),
        "sent in the clear"
    );
    client.incoming(&wire);
    assert_eq!(client_messages(&mut ws), [Message::binary(CONNACK)]);

    let stats = server.take_stats();
    assert_eq!((stats.tls_handshakes, stats.ws_handshakes), (1, 1));
}

#[test]
fn closing_sends_websocket_close_then_tls_close_notify() {
    let pki = Pki::new();
    let mut server = wss(&pki, false).accept().unwrap();
    let mut client = Client::tls(pki.client(ClientAuth::None, BOTH));
    let (mut ws, _) = ws_handshake(&mut client, &mut server, "mqtt", usize::MAX);
    server.close();
    assert!(server.wants_close());
    pump(&mut client, &mut server, &mut BytesMut::new(), usize::MAX);
    match client_messages(&mut ws).as_slice() {
        [Message::Close(Some(f))] => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("{other:?}"),
    }
    assert!(client.peer_closed, "TLS close_notify after the close frame");
}

#[test]
fn text_frame_inside_tls_is_refused_and_the_stack_closes() {
    let pki = Pki::new();
    let mut server = wss(&pki, false).accept().unwrap();
    let mut client = Client::tls(pki.client(ClientAuth::None, BOTH));
    let (mut ws, _) = ws_handshake(&mut client, &mut server, "mqtt", usize::MAX);
    ws.send(Message::text("nope")).unwrap();
    let err = pump(&mut client, &mut server, &mut BytesMut::new(), usize::MAX);
    assert!(matches!(
        err,
        Some(halyard_transport::TransportError::WsTextFrame)
    ));
    assert!(server.wants_close());
    let codes: Vec<_> = client_messages(&mut ws)
        .into_iter()
        .filter_map(|m| match m {
            Message::Close(Some(f)) => Some(f.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [CloseCode::Unsupported]);
    assert!(client.peer_closed);
}

#[test]
fn reload_keeps_the_websocket_settings() {
    let pki = Pki::new();
    let config = WsConfig {
        max_frame_bytes: 4096,
        ..WsConfig::default()
    };
    let acceptor = Acceptor::Wss(
        TlsAcceptor::load(&pki.settings(false)).unwrap(),
        config.clone(),
    );
    match acceptor.reload().unwrap() {
        Acceptor::Wss(_, ws) => assert_eq!(ws, config),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refused_upgrade_inside_tls_gets_http_error_then_close_notify() {
    let pki = Pki::new();
    let mut server = wss(&pki, false).accept().unwrap();
    let mut client = Client::tls(pki.client(ClientAuth::None, BOTH));
    client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let err = pump(&mut client, &mut server, &mut BytesMut::new(), usize::MAX);
    assert!(matches!(
        err,
        Some(halyard_transport::TransportError::WsHandshake(_))
    ));
    let answer = String::from_utf8(client.take_in()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(client.peer_closed);
    assert_eq!(server.take_stats().ws_handshake_refused, 1);
}

#[test]
fn an_idle_plain_connection_pays_two_words_for_the_option() {
    assert!(std::mem::size_of::<Option<Transport>>() <= 2 * std::mem::size_of::<usize>());
}
