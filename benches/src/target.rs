//! Target address checks: the generator only ever talks to loopback.

use std::net::{SocketAddr, ToSocketAddrs};

/// Why a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The name did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    /// It resolved to no address.
    #[error("{0} resolves to no address")]
    Empty(String),
    /// It resolved to an address outside 127.0.0.0/8 and ::1.
    #[error("{0} is not a loopback address ({1}); the generator only targets loopback")]
    NotLoopback(String, SocketAddr),
}

/// Resolves `target` (`host:port`) and returns its first address, if every address it
/// resolves to is loopback.
pub fn resolve_loopback(target: &str) -> Result<SocketAddr, TargetError> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| TargetError::Resolve(target.to_owned(), e))?
        .collect();
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(TargetError::NotLoopback(target.to_owned(), *bad));
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| TargetError::Empty(target.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        assert_eq!(
            resolve_loopback("127.0.0.1:1883").unwrap(),
            "127.0.0.1:1883".parse().unwrap()
        );
        assert!(resolve_loopback("127.8.9.10:1").is_ok());
        assert!(resolve_loopback("[::1]:1883").is_ok());
        assert!(
            resolve_loopback("localhost:1883")
                .unwrap()
                .ip()
                .is_loopback()
        );
    }

    #[test]
    fn other_targets_are_refused() {
        for t in [
            "10.0.0.1:1883",
            "192.168.1.1:1883",
            "0.0.0.0:1883",
            "[::]:1883",
        ] {
            assert!(
                matches!(resolve_loopback(t), Err(TargetError::NotLoopback(..))),
                "{t}"
            );
        }
        assert!(resolve_loopback("no-port").is_err());
    }
}
