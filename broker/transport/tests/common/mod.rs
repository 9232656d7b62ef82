//! Test harness: an rcgen PKI written to a temporary directory, in-memory clients (rustls,
//! tungstenite) and a pump that moves bytes between a client and a server layer.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use halyard_transport::{Layer, TlsSettings, TransportError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

/// A CA, a server certificate for `localhost`, a client certificate from the CA and one from
/// an unrelated CA, as PEM files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub client_pem: String,
    pub client_key_pem: String,
    pub rogue_pem: String,
    pub rogue_key_pem: String,
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn client_cert(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![
        SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
        SanType::DnsName(format!("{cn}.example.com").try_into().unwrap()),
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        Pki::write_into(tempfile::tempdir().unwrap())
    }

    fn write_into(dir: tempfile::TempDir) -> Pki {
        let ca = make_ca("Halyard test CA");
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let (client_pem, client_key_pem) = client_cert(&ca, "sensor-1");
        let rogue_ca = make_ca("Rogue CA");
        let (rogue_pem, rogue_key_pem) = client_cert(&rogue_ca, "intruder");
        let p = dir.path();
        std::fs::write(p.join("server.crt"), server.pem()).unwrap();
        std::fs::write(p.join("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(p.join("ca.crt"), ca.pem()).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            client_pem,
            client_key_pem,
            rogue_pem,
            rogue_key_pem,
        }
    }

    /// Replaces every file with a fresh PKI (new CA); returns the new material.
    pub fn regenerate(self) -> Pki {
        Pki::write_into(self.dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn settings(&self, mtls: bool) -> TlsSettings {
        TlsSettings {
            cert: self.path("server.crt"),
            key: self.path("server.key"),
            ca: mtls.then(|| self.path("ca.crt")),
            use_identity_as_username: mtls,
        }
    }

    /// A client trusting this PKI's CA, optionally with a client certificate.
    pub fn client(
        &self,
        auth: ClientAuth,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ClientConnection {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots);
        let pair = match auth {
            ClientAuth::None => None,
            ClientAuth::Good => Some((&self.client_pem, &self.client_key_pem)),
            ClientAuth::Rogue => Some((&self.rogue_pem, &self.rogue_key_pem)),
        };
        let config = match pair {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
    }
}

/// Which client certificate a test client presents.
#[derive(Clone, Copy)]
pub enum ClientAuth {
    None,
    Good,
    Rogue,
}

pub const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The client end of a test connection: application bytes in `app_out`/`app_in`, carried
/// in the clear or through a rustls client.
pub struct Client {
    pub tls: Option<ClientConnection>,
    pub app_out: Rc<RefCell<Vec<u8>>>,
    pub app_in: Rc<RefCell<VecDeque<u8>>>,
    pub error: Option<rustls::Error>,
    pub peer_closed: bool,
}

impl Client {
    pub fn plain() -> Client {
        Client {
            tls: None,
            app_out: Rc::default(),
            app_in: Rc::default(),
            error: None,
            peer_closed: false,
        }
    }

    pub fn tls(conn: ClientConnection) -> Client {
        Client {
            tls: Some(conn),
            ..Client::plain()
        }
    }

    /// Queues application bytes.
    pub fn write(&mut self, data: &[u8]) {
        self.app_out.borrow_mut().extend_from_slice(data);
    }

    /// Takes the application bytes received so far.
    pub fn take_in(&mut self) -> Vec<u8> {
        self.app_in.borrow_mut().drain(..).collect()
    }

    fn outgoing(&mut self) -> Vec<u8> {
        let app: Vec<u8> = std::mem::take(&mut *self.app_out.borrow_mut());
        let Some(tls) = &mut self.tls else {
            return app;
        };
        if !app.is_empty() {
            tls.writer().write_all(&app).unwrap();
        }
        let mut wire = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut wire).unwrap();
        }
        wire
    }

    pub fn incoming(&mut self, mut wire: &[u8]) {
        let Some(tls) = &mut self.tls else {
            self.app_in.borrow_mut().extend(wire);
            return;
        };
        while !wire.is_empty() && self.error.is_none() {
            tls.read_tls(&mut wire).unwrap();
            match tls.process_new_packets() {
                Ok(state) => {
                    let mut buf = vec![0; state.plaintext_bytes_to_read()];
                    tls.reader().read_exact(&mut buf).unwrap();
                    self.app_in.borrow_mut().extend(buf);
                    self.peer_closed |= state.peer_has_closed();
                }
                Err(e) => self.error = Some(e),
            }
        }
    }
}

/// Moves bytes both ways until neither side has anything to say (at most 64 rounds).
/// The server receives client bytes in chunks of at most `chunk` bytes. Returns the
/// server's first error; after one, the server's final bytes are still delivered.
pub fn pump<L: Layer>(
    client: &mut Client,
    server: &mut L,
    server_plain: &mut BytesMut,
    chunk: usize,
) -> Option<TransportError> {
    let mut error = None;
    for _ in 0..64 {
        let wire = client.outgoing();
        for part in wire.chunks(chunk) {
            if let Err(e) = server.receive(part, server_plain) {
                error = Some(e);
                break;
            }
        }
        let mut out = BytesMut::new();
        if let Err(e) = server.send(&[], &mut out) {
            error.get_or_insert(e);
        }
        client.incoming(&out);
        if error.is_some() || (wire.is_empty() && out.is_empty()) {
            break;
        }
    }
    error
}

/// An in-memory stream for a tungstenite client: writes go to `out`, reads come from `inp`
/// and report `WouldBlock` when it is empty.
pub struct MemStream {
    pub out: Rc<RefCell<Vec<u8>>>,
    pub inp: Rc<RefCell<VecDeque<u8>>>,
}

impl MemStream {
    pub fn of(client: &Client) -> MemStream {
        MemStream {
            out: client.app_out.clone(),
            inp: client.app_in.clone(),
        }
    }
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut inp = self.inp.borrow_mut();
        if inp.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(inp.len());
        for (b, x) in buf.iter_mut().zip(inp.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A masked client frame built by hand: `opcode` (0 continuation, 1 text, 2 binary, 8 close,
/// 9 ping), FIN bit, payload shorter than 64 KiB.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A minimal MQTT 3.1.1 CONNECT (client id "c1") and PINGREQ: opaque bytes for the layers.
pub const CONNECT: &[u8] = &[
    0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, b'c', b'1',
];
pub const PINGREQ: &[u8] = &[0xc0, 0x00];
pub const CONNACK: &[u8] = &[0x20, 0x02, 0x00, 0x00];

/// Runs tungstenite's client handshake over `client` against `server`, asking for
/// `protocols`; returns the client socket and the subprotocol the server chose.
pub fn ws_handshake<L: Layer>(
    client: &mut Client,
    server: &mut L,
    protocols: &str,
    chunk: usize,
) -> (WebSocket<MemStream>, Option<String>) {
    let mut request = "ws://localhost/mqtt".into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let mut attempt = tungstenite::client::client(request, MemStream::of(client));
    for _ in 0..16 {
        match attempt {
            Ok((ws, response)) => {
                let proto = response
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap().to_owned());
                return (ws, proto);
            }
            Err(HandshakeError::Interrupted(mid)) => {
                let err = pump(client, server, &mut BytesMut::new(), chunk);
                assert!(err.is_none(), "{err:?}");
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => panic!("client handshake failed: {e}"),
        }
    }
    panic!("handshake did not finish");
}

/// Reads every message the client has received.
pub fn client_messages(ws: &mut WebSocket<MemStream>) -> Vec<Message> {
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(m) => out.push(m),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return out;
            }
            Err(_) => return out,
        }
    }
}
