//! Start-up errors of `TlsAcceptor::load` name the file and the problem.

mod common;

use common::Pki;
use halyard_transport::{TlsAcceptor, TlsSettings, TransportError};

fn load_err(settings: &TlsSettings) -> TransportError {
    TlsAcceptor::load(settings).unwrap_err()
}

#[test]
fn unreadable_files_are_named() {
    let pki = Pki::new();
    for field in ["cert", "key", "ca"] {
        let mut s = pki.settings(true);
        let missing = pki.path("missing.pem");
        match field {
            "cert" => s.cert = missing.clone(),
            "key" => s.key = missing.clone(),
            _ => s.ca = Some(missing.clone()),
        }
        let err = load_err(&s);
        assert!(
            matches!(&err, TransportError::Read { path, .. } if *path == missing),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}

#[test]
fn files_without_the_expected_pem_section() {
    let pki = Pki::new();
    std::fs::write(pki.path("empty.pem"), "no pem here\n").unwrap();
    let s = TlsSettings {
        cert: pki.path("empty.pem"),
        ..pki.settings(false)
    };
    assert!(
        matches!(load_err(&s), TransportError::NoCertificate { path } if path == pki.path("empty.pem"))
    );
    // A key file holding only a certificate has no key.
    let s = TlsSettings {
        key: pki.path("server.crt"),
        ..pki.settings(false)
    };
    let err = load_err(&s);
    assert!(
        matches!(&err, TransportError::NoPrivateKey { path } if *path == pki.path("server.crt")),
        "{err:?}"
    );
    assert!(err.to_string().contains("no private key"), "{err}");
    let s = TlsSettings {
        ca: Some(pki.path("empty.pem")),
        ..pki.settings(true)
    };
    assert!(matches!(load_err(&s), TransportError::NoCertificate { .. }));
}

#[test]
fn key_of_another_certificate_is_a_mismatch() {
    let pki = Pki::new();
    std::fs::write(pki.path("client.key"), &pki.client_key_pem).unwrap();
    let s = TlsSettings {
        key: pki.path("client.key"),
        ..pki.settings(false)
    };
    let err = load_err(&s);
    assert!(
        matches!(&err, TransportError::KeyMismatch { cert, key }
            if *cert == pki.path("server.crt") && *key == pki.path("client.key")),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn settings_deserialize_strictly() {
    let s: TlsSettings = toml::from_str("cert = \"a.crt\"\nkey = \"a.key\"\n").unwrap();
    assert_eq!(s.ca, None);
    assert!(!s.use_identity_as_username);
    let s: TlsSettings =
        toml::from_str("cert = \"a\"\nkey = \"b\"\nca = \"c\"\nuse_identity_as_username = true\n")
            .unwrap();
    assert_eq!(s.ca.as_deref(), Some(std::path::Path::new("c")));
    assert!(toml::from_str::<TlsSettings>("cert = \"a\"\nkey = \"b\"\nbind = \"x\"\n").is_err());
}
