//! Command line: `halyard run`, `halyard ctl ...`, `halyard config ...`.
//!
//! Each subcommand is one variant of [`Command`]; later features add theirs (`ctl xdp top`,
//! `tune check|apply`, `passwd`, `store ...`) as new variants without touching the others.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    Run(ConfigArgs),
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
    /// Configuration to read `admin.bind` from when `--admin` is not given.
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
        Command::Run(args) => match Config::load_from_process(args.config.as_deref()) {
            Ok(config) => crate::run::run(config),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Ctl(CtlCommand::Status(args)) => crate::admin::ctl::status(&args),
        Command::Ctl(CtlCommand::Xdp(cmd)) => crate::xdp::ctl(&cmd),
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
            Command::Run(ConfigArgs { config: Some(_) })
        ));
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
