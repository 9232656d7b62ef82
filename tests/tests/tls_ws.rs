//! The TLS, mTLS and WebSocket listeners (`[listeners.tls]`, `[listeners.ws]`,
//! `[listeners.wss]`), driven by independent clients: mosquitto_pub/mosquitto_sub over TLS
//! with a CA generated here (rcgen), a tungstenite WebSocket client speaking hand-built MQTT
//! with subprotocol `mqtt` (over TCP and over a rustls client), and hand-built MQTT over a
//! rustls client for the certificate reload and the certificate-identity username.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use halyard_tests::broker::{TestBroker, free_port, run_halyard};
use halyard_tests::raw::{self, Packet, Props, Version};
use halyard_tests::{WAIT, wait_for};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA, a server certificate for 127.0.0.1/localhost, two client certificates from the CA
/// (CN `sensor-1` as `client`, CN `sensor-2` as `other`), one from an unrelated CA (`rogue`),
/// and a second CA with its own server certificate (`ca2.crt`, `server2.*`, for reloads),
/// written into `dir`.
fn write_pki(dir: &Path) {
    let ca = make_ca("Halyard test CA");
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    server_cert(&ca, dir, "server");
    client_cert(&ca, "sensor-1", dir, "client");
    client_cert(&ca, "sensor-2", dir, "other");
    client_cert(&make_ca("Rogue CA"), "intruder", dir, "rogue");
    let ca2 = make_ca("Halyard test CA 2");
    std::fs::write(dir.join("ca2.crt"), ca2.pem()).unwrap();
    server_cert(&ca2, dir, "server2");
}

/// A server certificate for localhost/127.0.0.1 from `ca`, as `{name}.crt` and `{name}.key`.
fn server_cert(ca: &CertifiedIssuer<'static, KeyPair>, dir: &Path, name: &str) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn client_cert(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str, dir: &Path, name: &str) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn pki_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("halyard-tests")
        .join(format!("pki-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_pki(&dir);
    dir
}

fn tls_config(dir: &Path, port: u16, mtls: bool) -> String {
    let mut s = format!(
        "[listeners.tls]\nbind = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    );
    if mtls {
        s.push_str(&format!("ca = \"{}\"\n", dir.join("ca.crt").display()));
    }
    s
}

/// Subscribes with mosquitto_sub over TLS (waiting for one message), publishes with
/// mosquitto_pub over TLS, and returns what the subscriber printed (None when a client failed).
fn tls_roundtrip(port: u16, dir: &Path, cert: Option<&str>, topic: &str) -> Option<String> {
    let tls_args = |cmd: &mut Command| {
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
            .arg(dir.join("ca.crt"))
            .args(["--insecure"]); // the certificate names localhost, not the address
        if let Some(name) = cert {
            cmd.arg("--cert")
                .arg(dir.join(format!("{name}.crt")))
                .arg("--key")
                .arg(dir.join(format!("{name}.key")));
        }
    };
    let mut sub = Command::new("mosquitto_sub");
    tls_args(&mut sub);
    sub.args(["-t", topic, "-C", "1", "-W", "10", "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let sub = sub
        .spawn()
        .expect("mosquitto_sub (apt-get install mosquitto-clients)");
    // The subscription must be in place before the publish: retry the publish with the
    // retain flag so the subscriber gets it whenever it subscribes.
    let mut publ = Command::new("mosquitto_pub");
    tls_args(&mut publ);
    let pub_out = publ
        .args(["-t", topic, "-m", "over-tls", "-q", "1", "-r"])
        .output()
        .expect("mosquitto_pub");
    let out = sub.wait_with_output().expect("mosquitto_sub output");
    if !pub_out.status.success() || !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn mosquitto_clients_publish_and_receive_over_tls() {
    let dir = pki_dir("tls");
    let port = free_port();
    let _b = TestBroker::start_with_config(&tls_config(&dir, port, false), &[]);
    assert_eq!(
        tls_roundtrip(port, &dir, None, "tls/a").as_deref(),
        Some("over-tls")
    );
}

#[test]
fn mtls_accepts_the_right_client_certificate_and_refuses_others() {
    let dir = pki_dir("mtls");
    let port = free_port();
    let _b = TestBroker::start_with_config(&tls_config(&dir, port, true), &[]);
    assert_eq!(
        tls_roundtrip(port, &dir, Some("client"), "mtls/a").as_deref(),
        Some("over-tls")
    );
    assert_eq!(
        tls_roundtrip(port, &dir, None, "mtls/b"),
        None,
        "no certificate"
    );
    assert_eq!(
        tls_roundtrip(port, &dir, Some("rogue"), "mtls/c"),
        None,
        "certificate from another CA"
    );
}

#[test]
fn tls_listener_from_environment_overrides() {
    let dir = pki_dir("env");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let cert = dir.join("server.crt").display().to_string();
    let key = dir.join("server.key").display().to_string();
    let _b = TestBroker::start_with(&[
        ("HALYARD_LISTENERS__TLS__BIND", &bind),
        ("HALYARD_LISTENERS__TLS__CERT", &cert),
        ("HALYARD_LISTENERS__TLS__KEY", &key),
    ]);
    assert_eq!(
        tls_roundtrip(port, &dir, None, "env/a").as_deref(),
        Some("over-tls")
    );
}

#[test]
fn a_bad_key_file_stops_start_with_a_message_naming_it() {
    let dir = pki_dir("badkey");
    let bad = dir.join("bad.key");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let cert = dir.join("server.crt").display().to_string();
    let bad_s = bad.display().to_string();
    let out = run_halyard(
        &["run"],
        &[
            ("HALYARD_LISTENERS__TLS__BIND", &bind),
            ("HALYARD_LISTENERS__TLS__CERT", &cert),
            ("HALYARD_LISTENERS__TLS__KEY", &bad_s),
            ("HALYARD_LISTENERS__TCP__BIND", "127.0.0.1:0"),
            ("HALYARD_ADMIN__BIND", "127.0.0.1:0"),
        ],
        Duration::from_secs(20),
    )
    .expect("halyard run exits on a bad key");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners.tls"), "{err}");
    assert!(err.contains(&bad_s), "{err}");
}

/// One MQTT 3.1.1 packet: fixed header with a one-byte remaining length (short packets only).
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first, u8::try_from(body.len()).unwrap()];
    v.extend_from_slice(body);
    v
}

fn mqtt_str(s: &str) -> Vec<u8> {
    let mut v = u16::try_from(s.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

type Ws<S = TcpStream> = tungstenite::WebSocket<S>;

fn ws_connect(port: u16, client_id: &str) -> Ws {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ws_handshake(stream, port, client_id)
}

/// WebSocket upgrade with subprotocol `mqtt` over `stream` (plain or TLS), then an MQTT 3.1.1
/// CONNECT that must be accepted.
fn ws_handshake<S: Read + Write>(stream: S, port: u16, client_id: &str) -> Ws<S> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://localhost:{port}/mqtt")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, resp) = tungstenite::client(req, stream).expect("WebSocket upgrade");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("mqtt")
    );
    // CONNECT, MQTT 3.1.1, clean session, keep alive 30.
    let mut body = mqtt_str("MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 30]);
    body.extend(mqtt_str(client_id));
    ws.send(tungstenite::Message::binary(packet(0x10, &body)))
        .unwrap();
    assert_eq!(ws_read(&mut ws)[..4], [0x20, 2, 0, 0], "CONNACK accepted");
    ws
}

fn ws_read<S: Read + Write>(ws: &mut Ws<S>) -> Vec<u8> {
    loop {
        match ws.read().expect("WebSocket message") {
            tungstenite::Message::Binary(b) => return b.to_vec(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

#[test]
fn websocket_client_publishes_and_subscribes() {
    let port = free_port();
    let _b = TestBroker::start_with_config(
        &format!("[listeners.ws]\nbind = \"127.0.0.1:{port}\"\n"),
        &[],
    );
    let sub = ws_connect(port, "ws-sub");
    let publ = ws_connect(port, "ws-pub");
    ws_pub_sub(sub, publ);
}

/// SIGTERM ends a broker whose last accepted connection came in on its WebSocket listener.
/// Each listener's accept loop waits for the thread's shutdown; with one waker slot, the
/// WebSocket loop's wait (renewed at each of its accepts) replaced the TCP loop's, which
/// then never saw the shutdown, and the broker did not exit.
#[test]
fn sigterm_exits_after_a_websocket_accept() {
    let port = free_port();
    let mut b = TestBroker::start_with_config(
        &format!("[listeners.ws]\nbind = \"127.0.0.1:{port}\"\n"),
        &[("HALYARD_IO__THREADS", "1")],
    );
    // Both connections are served (their CONNACKs came back) before the signal: the TCP
    // one first, so the WebSocket loop accepted last.
    let tcp = raw::RawClient::connected(b.mqtt_addr(), Version::V311, "tcp-first");
    let ws = ws_connect(port, "ws-last");
    let st = b.sigterm();
    assert!(st.success(), "exit status after SIGTERM: {st}");
    drop((tcp, ws));
}

/// `sub` subscribes to `ws/t`, `publ` publishes on it, `sub` receives it.
fn ws_pub_sub<S: Read + Write>(mut sub: Ws<S>, mut publ: Ws<S>) {
    // SUBSCRIBE id 1, "ws/t" QoS 0.
    let mut body = vec![0, 1];
    body.extend(mqtt_str("ws/t"));
    body.push(0);
    sub.send(tungstenite::Message::binary(packet(0x82, &body)))
        .unwrap();
    assert_eq!(
        ws_read(&mut sub),
        [0x90, 3, 0, 1, 0],
        "SUBACK granted QoS 0"
    );
    let mut body = mqtt_str("ws/t");
    body.extend_from_slice(b"hello-ws");
    publ.send(tungstenite::Message::binary(packet(0x30, &body)))
        .unwrap();
    let got = ws_read(&mut sub);
    assert_eq!(got[0], 0x30);
    assert!(got.ends_with(b"ws/thello-ws"), "{got:?}");
}

/// A rustls client trusting the CA in `ca` (and presenting `client_cert`'s `.crt`/`.key`
/// from `dir` when given), connected to 127.0.0.1:`port` as `localhost`, handshake done.
fn try_tls_client(
    port: u16,
    ca: &Path,
    dir: &Path,
    client_cert: Option<&str>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client_cert {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.crt")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.set_write_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(tls)
}

fn tls_client(
    port: u16,
    ca: &Path,
    dir: &Path,
    cert: Option<&str>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    try_tls_client(port, ca, dir, cert).unwrap_or_else(|e| panic!("TLS client: {e}"))
}

/// Reads one MQTT packet (bounded by the socket's read timeout).
fn read_packet(s: &mut impl Read, v: Version) -> Packet {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).expect("packet header");
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("remaining length");
        len |= usize::from(b[0] & 0x7F) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
        assert!(shift < 28, "remaining length too long");
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("packet body");
    raw::decode(v, first[0], &body).expect("a valid packet")
}

/// CONNECT (optionally with a user name) and the CONNACK code.
fn mqtt_connect(s: &mut impl ReadWrite, v: Version, id: &str, user: Option<&str>) -> u8 {
    let mut c = raw::Connect::new(v, id);
    c.username = user.map(str::to_owned);
    s.write_all(&c.encode()).unwrap();
    match read_packet(s, v) {
        Packet::ConnAck { code, .. } => code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// SUBSCRIBE one filter at QoS 1 and the SUBACK code.
fn mqtt_subscribe(s: &mut impl ReadWrite, v: Version, pid: u16, filter: &str) -> u8 {
    s.write_all(&raw::subscribe(v, pid, &[(filter, 1)], &Props::new()))
        .unwrap();
    match read_packet(s, v) {
        Packet::SubAck { codes, .. } => codes[0],
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// WebSocket over TLS (`[listeners.wss]`), subprotocol `mqtt`: publish and subscribe end to
/// end through a rustls client that verifies the server certificate against the test CA.
#[test]
fn websocket_over_tls_publishes_and_subscribes() {
    let dir = pki_dir("wss");
    let port = free_port();
    let _b = TestBroker::start_with_config(
        &format!(
            "[listeners.wss]\nbind = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        ),
        &[],
    );
    let ca = dir.join("ca.crt");
    let sub = ws_handshake(tls_client(port, &ca, &dir, None), port, "wss-sub");
    let publ = ws_handshake(tls_client(port, &ca, &dir, None), port, "wss-pub");
    ws_pub_sub(sub, publ);
    // Plain WebSocket on the WSS port is not accepted.
    let plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    use tungstenite::client::IntoClientRequest;
    let req = format!("ws://localhost:{port}/mqtt")
        .into_client_request()
        .unwrap();
    assert!(
        tungstenite::client(req, plain).is_err(),
        "plain WS on WSS port"
    );
}

/// SIGHUP reloads the TLS certificate: a connection opened before keeps working (and
/// receives a message published by a connection made after), new connections get the new
/// certificate (signed by another CA), and a client trusting only the old CA is refused.
#[test]
fn sighup_reloads_the_tls_certificate_keeping_connections() {
    let dir = pki_dir("reload");
    let port = free_port();
    let b = TestBroker::start_with_config(&tls_config(&dir, port, false), &[]);
    let (ca1, ca2) = (dir.join("ca.crt"), dir.join("ca2.crt"));
    let mut old = tls_client(port, &ca1, &dir, None);
    let v = Version::V311;
    assert_eq!(mqtt_connect(&mut old, v, "before-reload", None), 0);
    assert_eq!(mqtt_subscribe(&mut old, v, 1, "reload/t"), 1);
    assert!(
        try_tls_client(port, &ca2, &dir, None).is_err(),
        "ca2 not trusted yet"
    );

    std::fs::copy(dir.join("server2.key"), dir.join("server.key")).unwrap();
    std::fs::copy(dir.join("server2.crt"), dir.join("server.crt")).unwrap();
    let st = Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(st.success());
    let reloaded = wait_for(WAIT, || {
        let m = b.metrics();
        (m.get("halyard_tls_reloads_total{result=\"ok\"}") >= Some(1.0)).then_some(())
    });
    assert!(reloaded.is_some(), "TLS reload counted");

    let mut new = tls_client(port, &ca2, &dir, None);
    let new_leaf = CertificateDer::pem_file_iter(dir.join("server2.crt"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        new.conn.peer_certificates().map(|c| c[0].clone()),
        Some(new_leaf),
        "new connections see the new certificate"
    );
    assert_eq!(mqtt_connect(&mut new, v, "after-reload", None), 0);
    new.write_all(&raw::Publish::new("reload/t", b"still-up").encode(v))
        .unwrap();
    match read_packet(&mut old, v) {
        p @ Packet::Publish { .. } => {
            assert_eq!(raw::publish_parts(&p).1, b"still-up");
        }
        other => panic!("expected the PUBLISH on the old connection, got {other:?}"),
    }
    assert!(
        try_tls_client(port, &ca1, &dir, None).is_err(),
        "the old certificate is no longer served"
    );
}

/// `use_identity_as_username`: the client certificate's CN replaces the user name (even one
/// the client claims in CONNECT), as an ACL allowing only that user shows.
#[test]
fn mtls_certificate_identity_is_the_username() {
    let dir = pki_dir("ident");
    let port = free_port();
    let acl = dir.join("acl");
    std::fs::write(&acl, "user sensor-1\ntopic readwrite sensors/#\n").unwrap();
    let toml = format!(
        "{}use_identity_as_username = true\n[acl]\nfile = \"{}\"\ndefault = \"deny\"\n",
        tls_config(&dir, port, true),
        acl.display()
    );
    let _b = TestBroker::start_with_config(&toml, &[]);
    let ca = dir.join("ca.crt");
    for (v, denied) in [(Version::V5, 0x87), (Version::V311, 0x80)] {
        let mut s1 = tls_client(port, &ca, &dir, Some("client"));
        assert_eq!(mqtt_connect(&mut s1, v, "cn-sensor-1", None), 0);
        assert_eq!(mqtt_subscribe(&mut s1, v, 1, "sensors/a"), 1, "CN sensor-1");
        assert_eq!(mqtt_subscribe(&mut s1, v, 2, "other/a"), denied);
        // A claimed user name does not override the certificate.
        let mut s2 = tls_client(port, &ca, &dir, Some("other"));
        assert_eq!(mqtt_connect(&mut s2, v, "cn-sensor-2", Some("sensor-1")), 0);
        assert_eq!(
            mqtt_subscribe(&mut s2, v, 1, "sensors/a"),
            denied,
            "CN sensor-2 claiming user sensor-1"
        );
    }
}
