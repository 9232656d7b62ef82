//! The TLS, mTLS and WebSocket listeners (`[listeners.tls]`, `[listeners.ws]`), driven by
//! independent clients: mosquitto_pub/mosquitto_sub over TLS with a CA generated here (rcgen),
//! and a tungstenite WebSocket client speaking hand-built MQTT with subprotocol `mqtt`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use halyard_tests::broker::{TestBroker, free_port, run_halyard};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA, a server certificate for 127.0.0.1/localhost, a client certificate from the CA and
/// one from an unrelated CA, written into `dir`.
fn write_pki(dir: &Path) {
    let ca = make_ca("Halyard test CA");
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    client_cert(&ca, "sensor-1", dir, "client");
    client_cert(&make_ca("Rogue CA"), "intruder", dir, "rogue");
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

type Ws = tungstenite::WebSocket<TcpStream>;

fn ws_connect(port: u16, client_id: &str) -> Ws {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/mqtt")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
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

fn ws_read(ws: &mut Ws) -> Vec<u8> {
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
    let mut sub = ws_connect(port, "ws-sub");
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
    let mut publ = ws_connect(port, "ws-pub");
    let mut body = mqtt_str("ws/t");
    body.extend_from_slice(b"hello-ws");
    publ.send(tungstenite::Message::binary(packet(0x30, &body)))
        .unwrap();
    let got = ws_read(&mut sub);
    assert_eq!(got[0], 0x30);
    assert!(got.ends_with(b"ws/thello-ws"), "{got:?}");
}
