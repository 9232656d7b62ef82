//! TLS layer against an in-memory rustls client, with an rcgen PKI.

mod common;

use bytes::BytesMut;
use common::{BOTH, CONNACK, CONNECT, Client, ClientAuth, PINGREQ, Pki, pump};
use halyard_transport::{Layer, Limit, TlsAcceptor, TlsLimits, TlsSettings, TransportError};

fn connect(pki: &Pki, mtls: bool, auth: ClientAuth) -> (Client, halyard_transport::TlsLayer) {
    let acceptor = TlsAcceptor::load(&pki.settings(mtls)).unwrap();
    (
        Client::tls(pki.client(auth, BOTH)),
        acceptor.accept().unwrap(),
    )
}

/// Client sends CONNECT + PINGREQ, server answers CONNACK: both sides see exact bytes.
fn exchange<L: Layer>(client: &mut Client, server: &mut L, chunk: usize) {
    let mut plain = BytesMut::new();
    client.write(CONNECT);
    client.write(PINGREQ);
    assert!(pump(client, server, &mut plain, chunk).is_none());
    assert_eq!(&plain[..], [CONNECT, PINGREQ].concat().as_slice());
    assert!(!server.is_handshaking());
    let mut wire = BytesMut::new();
    server.send(CONNACK, &mut wire).unwrap();
    assert!(
        !wire.windows(CONNACK.len()).any(|w| w == CONNACK),
        "sent in the clear"
    );
    client.incoming(&wire);
    assert_eq!(client.take_in(), CONNACK);
}

#[test]
fn tls13_and_tls12_carry_mqtt_bytes_both_ways() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::load(&pki.settings(false)).unwrap();
    for (version, expect) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let mut client = Client::tls(pki.client(ClientAuth::None, &[version]));
        let mut server = acceptor.accept().unwrap();
        assert!(server.is_handshaking());
        exchange(&mut client, &mut server, usize::MAX);
        assert_eq!(server.protocol_version(), Some(expect));
        assert_eq!(server.peer_identity(), None);
        let stats = server.take_stats();
        assert_eq!(stats.tls_handshakes, 1);
        assert_eq!(stats.tls_handshake_failures, 0);
        assert!(server.take_stats().is_empty(), "take_stats resets");
    }
}

#[test]
fn records_split_into_single_bytes_are_reassembled() {
    let pki = Pki::new();
    let (mut client, mut server) = connect(&pki, false, ClientAuth::None);
    exchange(&mut client, &mut server, 1);
}

#[test]
fn mtls_exposes_client_certificate_names() {
    let pki = Pki::new();
    let (mut client, mut server) = connect(&pki, true, ClientAuth::Good);
    exchange(&mut client, &mut server, usize::MAX);
    let id = server.peer_identity().expect("verified client certificate");
    assert_eq!(id.common_name.as_deref(), Some("sensor-1"));
    assert_eq!(id.emails, ["ops@example.com"]);
    assert_eq!(id.dns_names, ["sensor-1.example.com"]);
    assert_eq!(id.username(), Some("sensor-1"));
    assert_eq!(id.username_override(), Some("sensor-1"));

    // Without use_identity_as_username the identity is there but does not replace the name.
    let settings = TlsSettings {
        use_identity_as_username: false,
        ..pki.settings(true)
    };
    let mut server = TlsAcceptor::load(&settings).unwrap().accept().unwrap();
    let mut client = Client::tls(pki.client(ClientAuth::Good, BOTH));
    exchange(&mut client, &mut server, usize::MAX);
    let id = server.peer_identity().unwrap();
    assert_eq!(id.username(), Some("sensor-1"));
    assert_eq!(id.username_override(), None);
}

fn assert_refused(pki: &Pki, auth: ClientAuth) {
    let (mut client, mut server) = connect(pki, true, auth);
    let mut plain = BytesMut::new();
    client.write(CONNECT);
    let err = pump(&mut client, &mut server, &mut plain, usize::MAX);
    assert!(matches!(err, Some(TransportError::Tls(_))), "{err:?}");
    assert!(plain.is_empty(), "no plaintext from a refused client");
    assert!(server.wants_close());
    assert_eq!(server.peer_identity(), None);
    assert_eq!(server.take_stats().tls_handshake_failures, 1);
    // The client was told (the server's alert reached it), or it never finished.
    assert!(client.error.is_some() || client.tls.as_ref().unwrap().is_handshaking());
    let mut out = BytesMut::new();
    assert!(matches!(
        server.send(b"x", &mut out),
        Err(TransportError::Closed)
    ));
}

#[test]
fn mtls_refuses_certificate_from_another_ca() {
    assert_refused(&Pki::new(), ClientAuth::Rogue);
}

#[test]
fn mtls_refuses_client_without_certificate() {
    assert_refused(&Pki::new(), ClientAuth::None);
}

#[test]
fn garbage_fails_the_handshake_with_an_alert() {
    let pki = Pki::new();
    let mut server = TlsAcceptor::load(&pki.settings(false))
        .unwrap()
        .accept()
        .unwrap();
    let mut plain = BytesMut::new();
    let err = server.receive(b"GET / HTTP/1.1\r\n\r\n", &mut plain);
    assert!(matches!(err, Err(TransportError::Tls(_))), "{err:?}");
    let mut out = BytesMut::new();
    server.send(&[], &mut out).unwrap();
    assert_eq!(out.first(), Some(&0x15), "a TLS alert record is queued");
    assert!(server.wants_close());
    assert_eq!(server.take_stats().tls_handshake_failures, 1);
}

#[test]
fn close_notify_both_ways() {
    let pki = Pki::new();
    let (mut client, mut server) = connect(&pki, false, ClientAuth::None);
    exchange(&mut client, &mut server, usize::MAX);
    // Server closes: the client sees close_notify.
    server.close();
    assert!(server.wants_close());
    let mut plain = BytesMut::new();
    pump(&mut client, &mut server, &mut plain, usize::MAX);
    assert!(client.peer_closed);

    // Client closes: data sent before close_notify still arrives, then the server wants out.
    let (mut client, mut server) = connect(&pki, false, ClientAuth::None);
    exchange(&mut client, &mut server, usize::MAX);
    client.write(PINGREQ);
    let mut plain = BytesMut::new();
    pump(&mut client, &mut server, &mut plain, usize::MAX);
    client.tls.as_mut().unwrap().send_close_notify();
    pump(&mut client, &mut server, &mut plain, usize::MAX);
    assert_eq!(&plain[..], PINGREQ);
    assert!(server.wants_close());
}

#[test]
fn plaintext_before_the_handshake_is_bounded() {
    let pki = Pki::new();
    let limits = TlsLimits {
        max_pending_plaintext_bytes: 1024,
        ..TlsLimits::default()
    };
    let acceptor = TlsAcceptor::load_with_limits(&pki.settings(false), limits).unwrap();
    let mut server = acceptor.accept().unwrap();
    let mut wire = BytesMut::new();
    let err = server.send(&[0u8; 4096], &mut wire);
    assert!(
        matches!(
            err,
            Err(TransportError::Limit {
                limit: Limit::TlsPendingPlaintext,
                value: 1024
            })
        ),
        "{err:?}"
    );
    assert_eq!(server.take_stats().hits(Limit::TlsPendingPlaintext), 1);
    assert!(server.wants_close());
}

#[test]
fn reload_swaps_material_for_new_connections_only() {
    let pki = Pki::new();
    let old = TlsAcceptor::load(&pki.settings(true)).unwrap();
    let (mut old_client, mut old_conn) = (
        Client::tls(pki.client(ClientAuth::Good, BOTH)),
        old.accept().unwrap(),
    );
    exchange(&mut old_client, &mut old_conn, usize::MAX);

    let new_pki = pki.regenerate();
    let new = old.reload().unwrap();
    // The established connection keeps working.
    exchange(&mut old_client, &mut old_conn, usize::MAX);
    // A client that trusts only the new CA is accepted by the new acceptor ...
    let mut client = Client::tls(new_pki.client(ClientAuth::Good, BOTH));
    let mut conn = new.accept().unwrap();
    exchange(&mut client, &mut conn, usize::MAX);
    // ... and refused by the old one (its server certificate is from the old CA).
    let mut client = Client::tls(new_pki.client(ClientAuth::Good, BOTH));
    let mut conn = old.accept().unwrap();
    let mut plain = BytesMut::new();
    client.write(CONNECT);
    pump(&mut client, &mut conn, &mut plain, usize::MAX);
    assert!(
        client.error.is_some(),
        "old certificate not trusted by the new CA"
    );
    assert!(plain.is_empty());

    // A failed reload reports the file and leaves the acceptor usable.
    std::fs::remove_file(new_pki.path("server.key")).unwrap();
    let err = new.reload().unwrap_err();
    assert!(err.to_string().contains("server.key"), "{err}");
    new.accept().unwrap();
}
