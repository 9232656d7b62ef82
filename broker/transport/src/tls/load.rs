//! Reading PEM files and assembling the rustls `ServerConfig`, with errors naming the file.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::{TlsLimits, TlsSettings};
use crate::TransportError;

/// The crypto provider every configuration of this crate uses (ring: it builds without
/// cmake or nasm). Passed explicitly, so no process-wide default provider is needed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TransportError {
    TransportError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Every `CERTIFICATE` section of a PEM file, in order; at least one.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TransportError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let pem = read(path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TransportError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(pem_error(path, e)),
    }
}

/// Builds the server configuration: TLS 1.2 and 1.3, the certificate chain and its key
/// (checked to match), and client-certificate verification when `settings.ca` is set.
pub(crate) fn server_config(
    settings: &TlsSettings,
    limits: &TlsLimits,
) -> Result<ServerConfig, TransportError> {
    let provider = provider();
    let chain = certificates(&settings.cert)?;
    let key = private_key(&settings.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TransportError::BadKey {
            path: settings.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot report its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TransportError::KeyMismatch {
                cert: settings.cert.clone(),
                key: settings.key.clone(),
            });
        }
        Err(e) => {
            return Err(TransportError::Pem {
                path: settings.cert.clone(),
                message: format!("unusable certificate: {e}"),
            });
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Config)?;
    let builder = match &settings.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.session_storage = if limits.session_cache_entries == 0 {
        Arc::new(NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(limits.session_cache_entries)
    };
    Ok(config)
}

fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TransportError> {
    let bad = |message: String| TransportError::BadCa {
        path: ca.to_path_buf(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| bad(e.to_string()))
}
