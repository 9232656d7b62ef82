//! The crate's one error type.

use std::path::PathBuf;

/// Why loading TLS material failed or why a byte-stream layer gave up on a connection.
///
/// Load errors (`Read` .. `Config`) name the file involved so a start-up message is actionable.
/// Connection errors (`Tls` .. `Closed`) end that connection only: after one, call
/// [`Layer::send`](crate::Layer::send) with empty plaintext once to collect the last bytes
/// (a TLS alert, a WebSocket close frame or an HTTP error response), write them, and close the
/// socket.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate, key or CA file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file named in the configuration.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{path}: invalid PEM: {message}")]
    Pem {
        /// The offending file.
        path: PathBuf,
        /// What the PEM parser reported.
        message: String,
    },
    /// The file holds no PEM `CERTIFICATE` section.
    #[error("{path}: no certificate found (expected a PEM `CERTIFICATE` section)")]
    NoCertificate {
        /// The certificate or CA file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[error("{path}: no private key found (expected a PEM PKCS#8, RSA or EC private key)")]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// The private key could not be used (unsupported algorithm or malformed).
    #[error("{path}: unusable private key: {source}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error("private key {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA certificate could not be used to verify clients.
    #[error("{path}: unusable CA certificate: {message}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// The reason.
        message: String,
    },
    /// rustls refused the assembled configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    /// The peer broke the TLS protocol, failed the handshake (e.g. presented a client
    /// certificate that does not chain to the configured CA) or sent a fatal alert.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// The HTTP upgrade request was refused (an HTTP error response is queued).
    #[error("WebSocket handshake refused: {0}")]
    WsHandshake(&'static str),
    /// The peer broke the WebSocket protocol (a close frame with 1002 is queued).
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// The peer sent a text frame; MQTT uses binary frames only (close 1003 is queued).
    #[error("WebSocket: text frame received; MQTT over WebSocket uses binary frames")]
    WsTextFrame,
    /// A named limit was hit (counted in [`TransportStats::limit_hits`](crate::TransportStats)).
    #[error("limit {limit} of {value} bytes exceeded")]
    Limit {
        /// Which limit.
        limit: crate::Limit,
        /// Its configured value.
        value: usize,
    },
    /// Plaintext was given after the layer closed or failed.
    #[error("the transport is closed")]
    Closed,
}
