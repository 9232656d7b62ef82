//! Why XDP could not be started, in words an operator can act on.

use std::io;

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// Everything that can stop [`crate::Xdp::start`]. The broker logs it once, keeps running
/// without XDP and shows the message in `/status`.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A field of the `[xdp]` section is invalid; `field` names it (e.g. `xdp.allow`).
    #[error("invalid {field}: {message}")]
    Config {
        /// The configuration key, e.g. `xdp.allow`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The process lacks a capability the kernel requires for BPF (`EPERM`).
    #[error(
        "no permission to {during} (EPERM): XDP needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON \
         (or root); run as root or grant them, e.g. AmbientCapabilities=CAP_BPF CAP_NET_ADMIN \
         CAP_PERFMON in the systemd unit"
    )]
    PermissionDenied {
        /// The step that was refused (`create BPF maps`, `load the program`, `attach to eth0`).
        during: String,
    },
    /// A configured interface does not exist in this network namespace.
    #[error("interface {interface:?} does not exist")]
    InterfaceMissing {
        /// The interface name from `xdp.interfaces`.
        interface: String,
    },
    /// The kernel verifier rejected the program (kernel too old or program bug).
    #[error("the kernel verifier rejected the XDP program ({io_error}); verifier log:\n{log}")]
    VerifierRejected {
        /// The error of the `BPF_PROG_LOAD` syscall.
        io_error: io::Error,
        /// The verifier's log.
        log: String,
    },
    /// The program could not be attached to an interface in the requested mode.
    #[error("cannot attach XDP to {interface:?} in {mode} mode: {source}")]
    Attach {
        /// The interface name.
        interface: String,
        /// The mode(s) tried, e.g. `driver` or `driver, then skb`.
        mode: &'static str,
        /// The kernel's answer.
        #[source]
        source: ProgramError,
    },
    /// The kernel lacks a feature the program needs (e.g. a map type), or another load
    /// step failed.
    #[error("cannot load the XDP program: {0}")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Writing the configuration or allow-list maps failed.
    #[error("cannot fill XDP map {map}: {source}")]
    Map {
        /// The map name in `ebpf/halyard_xdp.c`.
        map: &'static str,
        /// The error of the map operation.
        #[source]
        source: MapError,
    },
}

impl XdpError {
    /// True for [`XdpError::PermissionDenied`].
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::PermissionDenied { .. })
    }

    /// Classifies an error of `EbpfLoader::load` (maps created, programs parsed).
    pub(crate) fn from_ebpf(err: EbpfError) -> Self {
        if is_eperm(&err) {
            return Self::PermissionDenied {
                during: "create the BPF maps".into(),
            };
        }
        match err {
            EbpfError::ProgramError(p) => Self::from_program_load(p),
            other => Self::Load(Box::new(other)),
        }
    }

    /// Classifies an error of `Xdp::load` (`BPF_PROG_LOAD`, i.e. the verifier).
    pub(crate) fn from_program_load(err: ProgramError) -> Self {
        if is_eperm(&err) {
            return Self::PermissionDenied {
                during: "load the XDP program".into(),
            };
        }
        match err {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => Self::VerifierRejected {
                io_error,
                log: verifier_log.to_string(),
            },
            other => Self::Load(Box::new(other)),
        }
    }

    /// Classifies an error of `Xdp::attach`.
    pub(crate) fn from_attach(interface: &str, mode: &'static str, err: ProgramError) -> Self {
        if is_eperm(&err) {
            return Self::PermissionDenied {
                during: format!("attach XDP to {interface:?}"),
            };
        }
        match err {
            ProgramError::UnknownInterface { name } => Self::InterfaceMissing { interface: name },
            source => Self::Attach {
                interface: interface.to_owned(),
                mode,
                source,
            },
        }
    }
}

/// Walks the source chain looking for an `io::Error` that is `EPERM`.
fn is_eperm(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    let mut depth = 0;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        depth += 1;
        if depth > 16 {
            break;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_in_map_creation_is_permission_denied() {
        let err = EbpfError::MapError(MapError::CreateError {
            name: "sources".into(),
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        });
        let x = XdpError::from_ebpf(err);
        assert!(x.is_permission_denied(), "{x}");
        assert!(x.to_string().contains("CAP_BPF"));
    }

    #[test]
    fn eacces_from_the_verifier_is_a_rejection_with_log() {
        let err = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: io::Error::from_raw_os_error(libc::EACCES),
        });
        let x = XdpError::from_program_load(err);
        assert!(!x.is_permission_denied());
    }

    #[test]
    fn unknown_interface_is_interface_missing() {
        let err = ProgramError::UnknownInterface {
            name: "nope0".into(),
        };
        let x = XdpError::from_attach("nope0", "driver", err);
        assert!(matches!(x, XdpError::InterfaceMissing { ref interface } if interface == "nope0"));
        assert_eq!(x.to_string(), "interface \"nope0\" does not exist");
    }
}
