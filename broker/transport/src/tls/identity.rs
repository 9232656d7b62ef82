//! The names of a verified client certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most names of each kind kept from one certificate (a certificate may list many SANs).
const MAX_NAMES: usize = 16;

/// Who the peer proved to be with its client certificate (mTLS). Only built from a
/// certificate that rustls verified against the configured CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's first common name (CN), if it has one in a string form.
    pub common_name: Option<String>,
    /// DNS names from the subject alternative name extension (at most 16).
    pub dns_names: Vec<String>,
    /// E-mail addresses (RFC 822 names) from the subject alternative name extension
    /// (at most 16).
    pub emails: Vec<String>,
    /// The listener's `use_identity_as_username` setting.
    pub use_as_username: bool,
}

impl PeerIdentity {
    /// Reads the names of a DER certificate. A certificate without usable names gives an
    /// identity with no names (the handshake already verified it).
    pub(crate) fn from_der(der: &[u8], use_as_username: bool) -> PeerIdentity {
        let mut id = PeerIdentity {
            use_as_username,
            ..PeerIdentity::default()
        };
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return id;
        };
        id.common_name = cert
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .map(str::to_owned);
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) if id.dns_names.len() < MAX_NAMES => {
                        id.dns_names.push((*d).to_owned());
                    }
                    GeneralName::RFC822Name(e) if id.emails.len() < MAX_NAMES => {
                        id.emails.push((*e).to_owned());
                    }
                    _ => {}
                }
            }
        }
        id
    }

    /// The name to use as MQTT username: the CN, else the first SAN e-mail, else the first
    /// SAN DNS name.
    pub fn username(&self) -> Option<&str> {
        self.common_name
            .as_deref()
            .or_else(|| self.emails.first().map(String::as_str))
            .or_else(|| self.dns_names.first().map(String::as_str))
    }

    /// [`username`](PeerIdentity::username) if the listener has `use_identity_as_username`
    /// set: the server replaces the CONNECT username with it (and refuses the connection if
    /// this is `None` while the setting is on).
    pub fn username_override(&self) -> Option<&str> {
        if self.use_as_username {
            self.username()
        } else {
            None
        }
    }
}
