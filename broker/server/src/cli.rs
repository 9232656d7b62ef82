//! Command line: `halyard run`, `halyard ctl ...`, `halyard config ...`, `halyard store ...`.
//!
//! Each subcommand is one variant of [`Command`]; later features add theirs (`ctl xdp top`,
//! `tune check|apply`, `passwd`, `store ...`) as new variants without touching the others.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use halyard_store::CheckStatus;

use crate::config::{Config, reference};

/// The `halyard` command line.
#[derive(Debug, Parser)]
#[command(name = "halyard", version, about = "Halyard MQTT 3.1.1 + 5.0 broker")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker in the foreground until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Inspect a running broker through its admin HTTP server.
    #[command(subcommand)]
    Ctl(CtlCommand),
    /// Check the configuration or print its reference.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Compare the running kernel with a tuning profile (`check`) or write it (`apply`, root).
    #[command(subcommand)]
    Tune(crate::tune::TuneCommand),
    /// Manage a password file (like mosquitto_passwd).
    Passwd(halyard_auth::PasswdArgs),
    /// Inspect or repair the durable store (`[store]`) while the broker is stopped.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// Arguments of `halyard run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// When the store file is corrupt, move it aside (`halyard.redb.corrupt-N`, logged) and
    /// start with an empty store: its sessions, queues, retained messages and wills are lost.
    #[arg(long)]
    pub discard_corrupt: bool,
}

/// `halyard store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the store file without changing it (fails while a broker has it open).
    /// Exit status 0 when a broker can start on it, 1 when not, 2 when it cannot be read.
    Check(StoreArgs),
    /// Repair the store file in place (broker stopped). Exit status 0 when it is usable
    /// afterwards, 1 when it is beyond repair, 2 when it cannot be read.
    Repair(StoreArgs),
}

/// Arguments of `halyard store check|repair`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store directory; default: `store.dir` of the configuration.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Configuration to read `store.dir` from when `--dir` is not given.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `--config FILE`, shared by the subcommands that load the configuration.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// TOML configuration file; without it the embedded defaults apply. `HALYARD_*`
    /// environment variables override either.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `halyard ctl ...`.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Print a summary of the broker's `/status`.
    Status(StatusArgs),
    /// XDP connection accounting: `halyard ctl xdp top`.
    #[command(subcommand)]
    Xdp(crate::xdp::XdpCtl),
    /// The cluster: `halyard ctl cluster status`.
    #[command(subcommand)]
    Cluster(ClusterCtl),
}

/// `halyard ctl cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCtl {
    /// Print the cluster section of `/status` (role, Raft term and leader, stream state,
    /// upstream core, applied vs committed index, lag, queues).
    Status(StatusArgs),
    /// On the Raft leader: add the core listening at ADDR (its `cluster.listen`) to the voters.
    Join {
        /// The new core's cluster address.
        addr: String,
        /// Admin address and configuration.
        #[command(flatten)]
        target: StatusArgs,
    },
    /// This node leaves the cluster (its member record and routes are removed).
    Leave(StatusArgs),
    /// On the Raft leader: remove core ID (as in `ctl cluster status`) from the voters.
    Remove {
        /// The core's node id.
        id: u64,
        /// Admin address and configuration.
        #[command(flatten)]
        target: StatusArgs,
    },
    /// Remove node ID's member record and routes (a node gone for good).
    Evict {
        /// The node id.
        id: u64,
        /// Admin address and configuration.
        #[command(flatten)]
        target: StatusArgs,
    },
}

/// Arguments of `halyard ctl status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Admin HTTP address; default: `admin.bind` of the configuration.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Print the raw JSON document instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Configuration to read `admin.token` from, and `admin.bind` when `--admin` is not given.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `halyard config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration (file + environment), print the effective values.
    Check(ConfigArgs),
    /// Print every configuration key with its default and documentation (Markdown).
    Reference,
}

/// Parses the process arguments and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match Config::load_from_process(args.config.config.as_deref()) {
            Ok(config) => crate::run::run(config, args.discard_corrupt),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Ctl(CtlCommand::Status(args)) => crate::admin::ctl::status(&args),
        Command::Ctl(CtlCommand::Xdp(cmd)) => crate::xdp::ctl(&cmd),
        Command::Ctl(CtlCommand::Cluster(cmd)) => cluster_ctl(cmd),
        Command::Tune(cmd) => crate::tune::main(&cmd),
        Command::Passwd(args) => match halyard_auth::passwd_main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("halyard passwd: {e}");
                ExitCode::from(1)
            }
        },
        Command::Config(ConfigCommand::Check(args)) => {
            match Config::load_from_process(args.config.as_deref()) {
                Ok(config) => {
                    match toml::to_string_pretty(&config) {
                        Ok(text) => print!("{text}"),
                        Err(e) => eprintln!("cannot print the configuration: {e}"),
                    }
                    eprintln!("configuration ok");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", reference::markdown());
            ExitCode::SUCCESS
        }
        Command::Store(cmd) => store_main(&cmd),
    }
}

/// `halyard store check|repair`: prints the report (its text says what to do next).
fn cluster_ctl(cmd: ClusterCtl) -> ExitCode {
    use crate::admin::ctl::{cluster_member, cluster_status};
    match cmd {
        ClusterCtl::Status(args) => cluster_status(&args),
        ClusterCtl::Join { addr, target } => cluster_member(&target, "/cluster/join", &addr),
        ClusterCtl::Leave(args) => cluster_member(&args, "/cluster/leave", ""),
        ClusterCtl::Remove { id, target } => {
            cluster_member(&target, &format!("/cluster/remove/{id}"), "")
        }
        ClusterCtl::Evict { id, target } => {
            cluster_member(&target, &format!("/cluster/evict/{id}"), "")
        }
    }
}

fn store_main(cmd: &StoreCommand) -> ExitCode {
    let (args, repair) = match cmd {
        StoreCommand::Check(a) => (a, false),
        StoreCommand::Repair(a) => (a, true),
    };
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => match Config::load_from_process(args.config.config.as_deref()) {
            Ok(c) => c.store.dir,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    let result = if repair {
        halyard_store::repair(&dir)
    } else {
        halyard_store::check(&dir)
    };
    match result {
        Ok(report) => {
            println!("{report}");
            if report.is_usable() || (repair && report.status == CheckStatus::Repaired) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("halyard store: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_forms() {
        let cli = Cli::try_parse_from(["halyard", "run", "--config", "x.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Run(RunArgs {
                config: ConfigArgs { config: Some(_) },
                discard_corrupt: false
            })
        ));
        let cli = Cli::try_parse_from(["halyard", "run", "--discard-corrupt"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Run(RunArgs {
                discard_corrupt: true,
                ..
            })
        ));
        let cli = Cli::try_parse_from(["halyard", "store", "check", "--dir", "/x"]).unwrap();
        let Command::Store(StoreCommand::Check(a)) = cli.command else {
            panic!("not store check");
        };
        assert_eq!(a.dir.as_deref(), Some(std::path::Path::new("/x")));
        assert!(Cli::try_parse_from(["halyard", "store", "repair", "-c", "h.toml"]).is_ok());
        let cli =
            Cli::try_parse_from(["halyard", "ctl", "status", "--admin", "1.2.3.4:5", "--json"])
                .unwrap();
        let Command::Ctl(CtlCommand::Status(s)) = cli.command else {
            panic!("not ctl status");
        };
        assert_eq!(s.admin.as_deref(), Some("1.2.3.4:5"));
        assert!(s.json);
        assert!(Cli::try_parse_from(["halyard", "config", "reference"]).is_ok());
        assert!(Cli::try_parse_from(["halyard", "config", "check"]).is_ok());
    }
}
